"""ListObjectsV2 pages in, listing fragments out; Accept decides HTML or JSON."""

from __future__ import annotations

import json

import pytest

from mediaproxy.integrations.s3.listing import (
    Entry,
    HtmlListing,
    JsonListing,
    Page,
    PageError,
    list_query,
    parse_page,
    wants_json,
)

PAGE = b"""<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>media</Name><Prefix>videos/</Prefix><KeyCount>4</KeyCount><MaxKeys>1000</MaxKeys>
  <Delimiter>/</Delimiter><IsTruncated>true</IsTruncated>
  <Contents><Key>videos/</Key><Size>0</Size></Contents>
  <Contents><Key>videos/a &amp; b.mp4</Key><LastModified>2024-05-01T10:00:00.000Z</LastModified>
    <ETag>"x"</ETag><Size>1234</Size><StorageClass>STANDARD</StorageClass></Contents>
  <CommonPrefixes><Prefix>videos/2024/</Prefix></CommonPrefixes>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
</ListBucketResult>"""


def test_a_page_is_parsed_below_its_prefix() -> None:
    page = parse_page(PAGE, "videos/")
    assert page == Page(
        (Entry("a & b.mp4", 1234, "2024-05-01T10:00:00.000Z"), Entry("2024/")),
        "1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=",
    )


def test_the_last_page_has_no_token() -> None:
    last = PAGE.replace(b"<IsTruncated>true", b"<IsTruncated>false")
    assert parse_page(last, "videos/").next_token is None


@pytest.mark.parametrize("body", [b"", b"<html>", b"<Error><Code>AccessDenied</Code></Error>"])
def test_what_is_not_a_page_is_refused(body: bytes) -> None:
    with pytest.raises(PageError):
        parse_page(body, "")


def test_the_query_is_in_sigv4_order_and_encoding() -> None:
    assert list_query("a b/ü", None) == (
        "delimiter=%2F&list-type=2&max-keys=1000&prefix=a%20b%2F%C3%BC"
    )
    assert list_query("", "t/+=").startswith("continuation-token=t%2F%2B%3D&delimiter=")


@pytest.mark.parametrize(
    "accept, json_wanted",
    [
        (None, False),
        ("*/*", False),
        ("application/json", True),
        ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", False),
        ("application/json, text/html;q=0.5", True),
        ("text/html, application/json", False),
        ("application/*", True),
        ("application/json;q=0", False),
        ("application/json;q=1.5", False),
    ],
)
def test_accept(accept: str | None, json_wanted: bool) -> None:
    assert wants_json(accept) is json_wanted


def test_json_fragments_make_one_document_whatever_pages_are_empty() -> None:
    renderer = JsonListing("/m/videos/")
    empty, full = Page((), "t"), parse_page(PAGE, "videos/")
    text = (
        renderer.head()
        + renderer.page(empty)
        + renderer.page(full)
        + renderer.page(empty)
        + renderer.page(full)
        + renderer.tail()
    )
    document = json.loads(text)
    assert document["path"] == "/m/videos/"
    assert document["entries"][:2] == [
        {
            "name": "a & b.mp4",
            "type": "file",
            "size": 1234,
            "last_modified": "Wed, 01 May 2024 10:00:00 GMT",
        },
        {"name": "2024/", "type": "folder"},
    ]
    assert len(document["entries"]) == 4


def test_html_escapes_names_and_links_relatively() -> None:
    renderer = HtmlListing("/m/<videos>/", has_parent=True)
    text = (renderer.head() + renderer.page(parse_page(PAGE, "videos/")) + renderer.tail()).decode()
    assert "<title>Index of /m/&lt;videos&gt;/</title>" in text
    assert '<a href="a%20%26%20b.mp4">a &amp; b.mp4</a></td><td>1234</td>' in text
    assert '<a href="2024/">2024/</a>' in text
    assert '<a href="../">' in text
    assert '<a href="../">' not in HtmlListing("/m/x/", has_parent=False).head().decode()
