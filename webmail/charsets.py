"""Decoding mail text whatever charset label it carries: a WHATWG-shaped alias table in front of
Python's codecs, then ``errors="replace"``. Never raises.

The WHATWG Encoding Standard (https://encoding.spec.whatwg.org/#names-and-labels) is what
browsers, and so senders' test tools, actually do: every Latin-1 and ASCII label decodes as
windows-1252, ``ks_c_5601-1987`` as windows-949, ``x-sjis`` as windows-31J, ``iso-8859-8-i`` as
ISO-8859-8, ``windows-874`` as cp874. Python's ``codecs`` fails on some of these labels and maps
others differently. Labels that name no text codec (``base64``, ``rot13``, ``zlib``, ...) are
refused and the bytes are decoded as UTF-8, else windows-1252.
"""
from __future__ import annotations

import codecs

#: label (lower case) -> Python codec name.
ALIASES: dict[str, str] = {}


def _alias(codec: str, *labels: str) -> None:
    for label in labels:
        ALIASES[label] = codec


_alias("utf-8", "utf-8", "utf8", "unicode-1-1-utf-8", "unicode11utf8", "unicode20utf8",
       "x-unicode20utf8")
_alias("cp1252", "windows-1252", "x-cp1252", "cp1252", "iso-8859-1", "iso8859-1", "iso88591",
       "iso_8859-1", "iso_8859-1:1987", "latin1", "l1", "cp819", "ibm819", "csisolatin1",
       "iso-ir-100", "us-ascii", "ascii", "ansi_x3.4-1968", "us", "iso646-us", "cp367", "ibm367")
_alias("cp874", "windows-874", "dos-874", "iso-8859-11", "iso8859-11", "iso885911", "tis-620",
       "tis620", "x-windows-874")
_alias("iso8859-8", "iso-8859-8-i", "csiso88598i", "logical", "iso-8859-8-e", "csiso88598e",
       "iso-8859-8", "iso8859-8", "visual", "hebrew")
_alias("cp932", "x-sjis", "shift_jis", "shift-jis", "sjis", "ms932", "ms_kanji", "windows-31j",
       "x-ms-cp932", "csshiftjis", "csWindows31J".lower())
_alias("mac_roman", "x-mac-roman", "mac", "macintosh", "csmacintosh", "macroman")
_alias("mac_cyrillic", "x-mac-cyrillic", "x-mac-ukrainian")
_alias("cp949", "ks_c_5601-1987", "ks_c_5601-1989", "ksc5601", "ksc_5601", "korean", "iso-ir-149",
       "csksc56011987", "windows-949", "euc-kr", "cseuckr", "x-euc-kr", "uhc")
_alias("gb18030", "gb18030", "gb2312", "gbk", "chinese", "csgb2312", "csiso58gb231280", "gb_2312",
       "gb_2312-80", "iso-ir-58", "x-gbk", "cp936", "windows-936", "euc-cn", "x-euc-cn")
_alias("big5hkscs", "big5", "big5-hkscs", "cn-big5", "csbig5", "x-x-big5", "x-big5")
_alias("euc_jp", "euc-jp", "cseucpkdfmtjapanese", "x-euc-jp")
_alias("iso2022_jp", "iso-2022-jp", "csiso2022jp")
_alias("koi8_r", "koi8-r", "koi", "koi8", "koi8_r", "cskoi8r")
_alias("koi8_u", "koi8-u", "koi8-ru")
_alias("cp1254", "windows-1254", "iso-8859-9", "iso8859-9", "iso88599", "latin5", "l5",
       "csisolatin5", "iso-ir-148", "iso_8859-9")
_alias("cp1250", "windows-1250", "x-cp1250")
_alias("cp1251", "windows-1251", "x-cp1251")
_alias("iso8859-2", "iso-8859-2", "latin2", "l2", "csisolatin2")
_alias("iso8859-15", "iso-8859-15", "latin9", "l9", "csisolatin9")
_alias("utf-16-le", "utf-16", "utf-16le", "unicode", "ucs-2", "csunicode", "iso-10646-ucs-2",
       "unicodefeff")
_alias("utf-16-be", "utf-16be", "unicodefffe")
_alias("latin-1", "x-user-defined")

#: Codecs that are not text encodings, or that make bytes out of escapes: never used for mail.
REFUSED = frozenset({"base64", "bz2_codec", "hex_codec", "quopri_codec", "rot-13", "uu_codec",
                     "zlib_codec", "base64_codec", "bz2", "hex", "quopri", "rot13", "uu", "zlib",
                     "unicode_escape", "raw_unicode_escape", "unicode-escape", "raw-unicode-escape",
                     "punycode", "idna", "undefined", "mbcs", "oem", "charmap", "utf-7"})


def codec_for(label: str | None) -> str | None:
    """The Python codec for a charset ``label`` (MIME ``charset=`` or RFC 2047), or None when the
    label is missing, unknown or refused."""
    if not label:
        return None
    name = str(label).strip().strip("\"'").lower()
    if "*" in name:                       # RFC 2231 language suffix: charset*lang
        name = name.split("*", 1)[0]
    if not name or len(name) > 40:
        return None
    if name in ALIASES:
        return ALIASES[name]
    try:
        info = codecs.lookup(name)
    except (LookupError, ValueError, TypeError):
        return None
    if info.name in REFUSED or name in REFUSED or not getattr(info, "_is_text_encoding", True):
        return None
    return info.name


def decode_bytes(data: bytes, label: str | None = None) -> str:
    """``data`` as text: the labelled charset (through ALIASES) with errors replaced; without a
    usable label UTF-8 if it decodes strictly, else windows-1252. Never raises."""
    if not data:
        return ""
    codec = codec_for(label)
    if codec is not None:
        try:
            return data.decode(codec, "replace")
        except Exception:
            pass
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def unsurrogate(s: str) -> str:
    """A str from the ``email`` package may carry raw 8-bit header bytes as lone surrogates
    (surrogateescape): turn them back into bytes and decode those (UTF-8, else windows-1252)."""
    if not any("\ud800" <= ch <= "\udfff" for ch in s):
        return s
    try:
        raw = s.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return s.encode("utf-8", "replace").decode("utf-8", "replace")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:       # mixed: decide word by word
        return " ".join(decode_bytes(w) for w in raw.split(b" "))
