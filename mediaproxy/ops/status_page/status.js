// The status page: one JSON overview, then one server-sent event a second.
// Everything from the server goes into the page as text (paths come from clients).
"use strict";

const UNITS = ["B", "KB", "MB", "GB", "TB"];

function formatBytes(bytes) {
  let value = bytes, unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) { value /= 1000; unit += 1; }
  return (unit === 0 ? value.toFixed(0) : value.toFixed(1)) + " " + UNITS[unit];
}

// "0.4 s", "59 s", "1 h", "1 h 30 min 30 s": whole units as they are, no "1.0 h".
function formatSeconds(seconds) {
  if (seconds < 60) return (Number.isInteger(seconds) ? seconds : seconds.toFixed(1)) + " s";
  const whole = Math.round(seconds);
  const parts = [[Math.floor(whole / 3600), "h"], [Math.floor((whole % 3600) / 60), "min"],
                 [whole % 60, "s"]];
  return parts.filter(([count]) => count > 0).map(([count, unit]) => count + " " + unit).join(" ");
}

// A cell holds one span (so a narrow layout can put the column's label beside it). A path
// breaks after a "/": each name is a box of its own (status.css), split only if it is wider
// than the screen, never at a hyphen inside it.
function cell(text, className) {
  const td = document.createElement("td");
  const value = document.createElement("span");
  if (className === "path") {
    text.split(/(?<=\/)/).forEach((piece, index) => {
      if (index > 0) value.append(document.createElement("wbr"));
      const name = document.createElement("span");
      name.className = "name";
      name.textContent = piece;
      value.append(name);
    });
  } else {
    value.textContent = text;
  }
  td.append(value);
  if (className) td.className = className;
  return td;
}

function fillTable(tbody, rows) {
  const labels = [...tbody.closest("table").tHead.rows[0].cells].map((th) => th.textContent);
  for (const row of rows) {
    [...row.cells].forEach((td, index) => { td.dataset.label = labels[index]; });
  }
  tbody.replaceChildren(...rows);
}

function showProcess(info) {
  const text = info.fleet
    ? `Served by process ${info.pid} on ${info.host}: the live table shows the streams of ` +
      "every instance sharing this Redis; /metrics counts this instance's."
    : info.processes > 1
    ? `Served by process ${info.pid}, one of ${info.processes} worker processes: the live ` +
      "table shows every worker's streams; /metrics sums them all."
    : `Served by process ${info.pid}.`;
  document.getElementById("process").textContent = text;
}

function showRoutes(routes) {
  fillTable(document.querySelector("#routes tbody"), routes.map((route) => {
    const tr = document.createElement("tr");
    tr.append(cell(route.prefix, "path"), cell(route.integration),
              cell(formatSeconds(route.idle_timeout_s), "num"),
              cell(formatSeconds(route.max_stream_duration_s), "num"),
              cell(route.cache ? `${formatBytes(route.cache.size_bytes)} of ` +
                   `${formatBytes(route.cache.max_bytes)}` : "", "num"));
    return tr;
  }));
}

function showPlayers(samples) {
  const players = document.getElementById("players");
  if (samples.length === 0) {
    const p = document.createElement("p");
    p.className = "muted";
    p.textContent = "No video or audio file under the file routes.";
    players.replaceChildren(p);
    return;
  }
  const rank = (sample) => (sample.kind === "video" ? 0 : 1);
  const videoFirst = [...samples].sort((a, b) => rank(a) - rank(b));
  players.replaceChildren(...videoFirst.map((sample) => {
    const figure = document.createElement("figure");
    const media = document.createElement(sample.kind === "video" ? "video" : "audio");
    media.controls = true;
    media.muted = true;
    media.preload = "metadata";
    media.src = sample.url;
    media.dataset.url = sample.url;
    const caption = document.createElement("figcaption");
    const link = document.createElement("a");
    link.href = sample.url;
    link.textContent = sample.name;
    const detail = document.createElement("span");
    detail.className = "muted";
    detail.textContent = ` ${sample.media_type} via ${sample.route}`;
    caption.append(link, detail);
    figure.append(media, caption);
    return figure;
  }));
}

function showStreams(streams) {
  const rows = streams.map((stream) => {
    const tr = document.createElement("tr");
    tr.dataset.path = stream.path;
    tr.append(cell(stream.route, "path"), cell(stream.method), cell(stream.path, "path"),
              cell(stream.client), cell(String(stream.status)),
              cell(stream.range || ""), cell(stream.content_range || ""),
              cell(formatBytes(stream.bytes_sent), "num"),
              cell(formatBytes(stream.sent_per_s) + "/s", "num"),
              cell(formatBytes(stream.bytes_received), "num"),
              cell(formatSeconds(stream.age_s), "num"), cell(stream.cache || ""));
    tr.title = `process ${stream.pid} on ${stream.host}`;  // where it runs, in a fleet too
    return tr;
  });
  fillTable(document.querySelector("#streams tbody"), rows);
  document.getElementById("no-streams").hidden = rows.length > 0;
}

function listen() {
  const badge = document.getElementById("connection");
  const events = new EventSource("events");
  events.onopen = () => { badge.textContent = "live"; badge.className = "badge live"; };
  events.onerror = () => { badge.textContent = "reconnecting…"; badge.className = "badge down"; };
  events.onmessage = (message) => {
    const event = JSON.parse(message.data);
    showProcess(event);
    showStreams(event.streams);
  };
}

async function main() {
  listen();
  const response = await fetch("api/overview");
  const overview = await response.json();
  document.getElementById("version").textContent = "version " + overview.version;
  showProcess(overview);
  showRoutes(overview.routes);
  showPlayers(overview.samples);
}

main();
