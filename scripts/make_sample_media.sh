#!/usr/bin/env bash
# Regenerate sample_media/ from synthetic sources (test patterns, sine tones,
# seeded Python), so every fixture is reproducible and free to redistribute.
# The small outputs are committed: only run this to change them. The seeking
# clip (a few MB) is not: `make` generates it once, with `clip`.
#
# Usage: scripts/make_sample_media.sh          everything   (needs Debian's ffmpeg;
#        scripts/make_sample_media.sh clip     the clip only  PYTHON overrides python3)
set -euo pipefail

for tool in ffmpeg ffprobe; do
    if ! command -v "$tool" >/dev/null 2>&1; then
        echo "error: $tool not found; install it with: apt-get install ffmpeg" >&2
        exit 1
    fi
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="$root/sample_media"
python="${PYTHON:-python3}"
mkdir -p "$out/video" "$out/audio" "$out/data"

# Quiet, overwrite, and no encoder/version strings or timestamps in the output,
# so regenerating with the same ffmpeg build gives the same bytes.
ff=(ffmpeg -hide_banner -loglevel error -y)
bitexact=(-map_metadata -1 -fflags +bitexact -flags:v +bitexact -flags:a +bitexact)

# H.264 High + AAC, 720p, 20 s, about 4 MB: big enough that a browser fetches the start
# (faststart: moov first), then asks for a range from the middle when the player seeks, which
# the small clips below never show (a browser reads each whole in one request). Not committed:
# it would be most of the repository's size, and it is made in seconds.
make_clip() {
    local clip="$out/video/testsrc2-720p-h264.mp4"
    echo "mediaproxy: generating ${clip#"$root"/} (a 20 s 720p clip for seeking; once)"
    "${ff[@]}" \
        -f lavfi -i "testsrc2=size=1280x720:rate=24:duration=20" \
        -f lavfi -i "sine=frequency=440:beep_factor=4:sample_rate=48000:duration=20" \
        -c:v libx264 -profile:v high -pix_fmt yuv420p -preset veryfast \
        -b:v 1500k -maxrate 2000k -bufsize 3000k -g 48 -keyint_min 48 -sc_threshold 0 \
        -c:a aac -b:a 128k -ac 2 \
        -movflags +faststart "${bitexact[@]}" \
        "$clip.partial.mp4"
    mv "$clip.partial.mp4" "$clip"  # never a half-written clip under the name make checks
}
if [ "${1:-}" = clip ]; then
    make_clip
    exit 0
fi
make_clip

# H.264 High + AAC, 15 s. A keyframe every 2 s (no scene-cut extras) keeps
# range-request seeking cheap; +faststart puts moov before mdat so browsers can
# start playing before the whole file arrives.
"${ff[@]}" \
    -f lavfi -i "testsrc2=size=640x360:rate=24:duration=15" \
    -f lavfi -i "sine=frequency=440:beep_factor=4:sample_rate=48000:duration=15" \
    -c:v libx264 -profile:v high -level:v 3.1 -pix_fmt yuv420p -preset slow -crf 28 \
    -g 48 -keyint_min 48 -sc_threshold 0 \
    -c:a aac -b:a 96k -ac 2 \
    -movflags +faststart "${bitexact[@]}" \
    "$out/video/testsrc-h264-aac.mp4"

# VP9 + Opus, 8 s, the royalty-free pair every current browser plays.
"${ff[@]}" \
    -f lavfi -i "smptebars=size=640x360:rate=24:duration=8" \
    -f lavfi -i "sine=frequency=880:sample_rate=48000:duration=8" \
    -c:v libvpx-vp9 -b:v 0 -crf 40 -deadline good -cpu-used 4 -row-mt 1 -g 48 -pix_fmt yuv420p \
    -c:a libopus -b:a 64k -ac 2 \
    "${bitexact[@]}" \
    "$out/video/smptebars-vp9-opus.webm"

# MP3 starting with an ID3v2 tag, as most real-world MP3s do.
"${ff[@]}" \
    -f lavfi -i "sine=frequency=523.25:beep_factor=2:sample_rate=44100:duration=10" \
    -c:a libmp3lame -b:a 64k -ac 1 \
    "${bitexact[@]}" \
    "$out/audio/sine-523hz.mp3"

# Small uncompressed WAV (16-bit mono PCM, 2.5 s).
"${ff[@]}" \
    -f lavfi -i "sine=frequency=330:sample_rate=22050:duration=2.5" \
    -c:a pcm_s16le -ac 1 \
    "${bitexact[@]}" \
    "$out/audio/sine-330hz.wav"

"$python" "$root/scripts/make_sample_csv.py" "$out/data/people.csv"
"$python" "$root/scripts/make_orders_db.py" "$out/data/orders.sqlite"

# Non-ASCII file name (NFC, with an en dash) to exercise Content-Disposition filename*.
cat >"$out/data/résumé – notes.txt" <<'EOF'
Résumé – notes
==============

This file exists for its name: "résumé – notes.txt" is not ASCII,
so a download must send Content-Disposition with filename*=UTF-8''…
Zoë, François and 東京 appear here so the body is UTF-8 too.
EOF

echo "sample media written to $out"
