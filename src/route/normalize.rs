//! Request path normalisation before route matching (Istio's
//! `meshConfig.pathNormalization.normalization`).
//!
//! Routing and, later, authorization look at the path *after* normalisation, so that
//! `/public/../admin` cannot dodge a route written for `/admin`. Istio configures Envoy's
//! HTTP connection manager with one of four levels; this module reproduces what Envoy does
//! for each of them:
//!
//! | [`PathNormalization`] | Istio | Envoy HCM settings |
//! |---|---|---|
//! | `None` | `NONE` | nothing |
//! | `Base` (default) | `BASE` / `DEFAULT` | `normalize_path` |
//! | `MergeSlashes` | `MERGE_SLASHES` | `normalize_path` + `merge_slashes` |
//! | `DecodeAndMergeSlashes` | `DECODE_AND_MERGE_SLASHES` | `path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD` + the two above |
//!
//! Envoy's `normalize_path` is not a bare RFC 3986 §5.2.4 `remove_dot_segments`: it runs
//! Envoy's snapshot of Chromium's URL path canonicaliser (`source/common/chromium_url`), and
//! this module follows that snapshot byte for byte:
//!
//! * `.` and `..` segments are resolved; `..` never climbs above the root (`/../a` → `/a`);
//!   a trailing `/..` or `/.` leaves a trailing slash (`/a/b/..` → `/a/`).
//! * An encoded dot (`%2e` / `%2E`) counts as a dot, so `/a/b/%2e%2e/c` → `/a/c`. Envoy
//!   decodes `%2e` to `.` everywhere in the path, not only in dot segments.
//! * A backslash is a path separator: it is rewritten to `/` (`/a/..\c` → `/c`).
//! * Percent-encoded *unreserved* characters (`A-Z a-z 0-9 - _ ~`) are decoded (`/%41` →
//!   `/A`); every other escape is kept exactly as sent, hex case included (`%2f`, `%5C`,
//!   `%25` stay). This is the one place where Envoy goes beyond RFC 3986, and we follow it:
//!   a route for `/admin` also catches `/%61dmin`, as it does in Istio.
//! * Characters that may not appear raw in a path (controls, space, `"`, `#`, `<`, `>`, `?`,
//!   `^`, `` ` ``, `{`, `|`, `}`, DEL and non-ASCII bytes) are percent-encoded in upper-case
//!   hex.
//! * A path that does not start with `/` gets one (`a/b` → `/a/b`, `` → `/`).
//! * A NUL byte, raw or as `%00`, makes Envoy reject the request with 400:
//!   [`try_normalize_path`] reports it as [`InvalidPath`], [`normalize_path`] leaves the
//!   `%00` in place.
//!
//! `MergeSlashes` then collapses runs of `/` (after dot segments are resolved, as Envoy
//! orders it: `/a//../b` → `/a/b`). `DecodeAndMergeSlashes` first decodes `%2F`/`%2f` to `/`
//! and `%5C`/`%5c` to `\` (which the canonicaliser then turns into `/`).
//!
//! All functions work on the path alone; [`split_path_query`] separates it from the query.
//! The common case, an already-normal path, is returned borrowed: nothing is allocated.
//!
//! ```
//! use std::borrow::Cow;
//! use tower_mesh::route::normalize::{normalize_path, split_path_query, PathNormalization};
//!
//! let (path, query) = split_path_query("/public/../admin?x=1");
//! assert_eq!(normalize_path(path, PathNormalization::Base), "/admin");
//! assert_eq!(query, Some("x=1"));
//! assert!(matches!(normalize_path("/a/b", PathNormalization::Base), Cow::Borrowed(_)));
//! ```

use std::borrow::Cow;

/// How request paths are normalised before matching (Istio's
/// `meshConfig.pathNormalization.normalization`). The default is [`PathNormalization::Base`],
/// Istio's `DEFAULT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum PathNormalization {
    /// `NONE`: the path is matched exactly as sent.
    None,
    /// `BASE` (Istio's default): Envoy's `normalize_path` (dot segments, backslashes, encoded
    /// dots and unreserved characters; see the module docs).
    #[default]
    Base,
    /// `MERGE_SLASHES`: `Base`, then runs of `/` collapse into one.
    MergeSlashes,
    /// `DECODE_AND_MERGE_SLASHES`: `%2F`/`%2f` → `/` and `%5C`/`%5c` → `\` first, then
    /// `MergeSlashes`.
    DecodeAndMergeSlashes,
}

/// A path Envoy's `normalize_path` rejects (it answers 400): it contains a NUL byte, raw or
/// encoded as `%00`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
#[error("the request path contains a NUL byte (raw or as %00), which path normalisation rejects")]
pub struct InvalidPath;

/// Splits a request target `path?query#fragment` into the path and the query (without the
/// `?`). The fragment is dropped, as Envoy strips it before routing. `"/a?"` gives
/// `("/a", Some(""))`; `"/a"` gives `("/a", None)`.
pub fn split_path_query(path_and_query: &str) -> (&str, Option<&str>) {
    let without_fragment = match path_and_query.find('#') {
        Some(i) => &path_and_query[..i],
        None => path_and_query,
    };
    match without_fragment.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (without_fragment, None),
    }
}

/// Normalises `path` (no query string) as `mode` says; see the module docs for the rules.
/// Borrows when nothing changes. Never fails: a path Envoy would reject (a NUL byte) is
/// returned with its `%00` kept; use [`try_normalize_path`] to reject it instead.
pub fn normalize_path(path: &str, mode: PathNormalization) -> Cow<'_, str> {
    normalize(path, mode).0
}

/// Like [`normalize_path`], but reports the paths Envoy answers with 400 (a NUL byte, raw or
/// `%00`) as [`InvalidPath`]. With [`PathNormalization::None`] every path is accepted.
pub fn try_normalize_path(
    path: &str,
    mode: PathNormalization,
) -> Result<Cow<'_, str>, InvalidPath> {
    match normalize(path, mode) {
        (out, true) => Ok(out),
        (_, false) => Err(InvalidPath),
    }
}

/// The normalised path and whether it is valid (no NUL).
fn normalize(path: &str, mode: PathNormalization) -> (Cow<'_, str>, bool) {
    if mode != PathNormalization::None && is_plain(path, mode) {
        return (Cow::Borrowed(path), true);
    }
    match mode {
        PathNormalization::None => (Cow::Borrowed(path), true),
        PathNormalization::Base => canonicalize(path),
        PathNormalization::MergeSlashes => {
            let (out, valid) = canonicalize(path);
            (then(out, merge_slashes), valid)
        }
        PathNormalization::DecodeAndMergeSlashes => {
            let decoded = unescape_slashes(path);
            let mut valid = true;
            let out = then(decoded, |p| {
                let (out, v) = canonicalize(p);
                valid = v;
                out
            });
            (then(out, merge_slashes), valid)
        }
    }
}

/// Whether every level of normalisation leaves `path` as it is (the common case, checked in
/// one pass): it starts with `/` and has no byte the canonicaliser treats specially (dots,
/// `%`, backslashes, bytes it escapes, NUL) and, for the levels that merge slashes, no `//`.
fn is_plain(path: &str, mode: PathNormalization) -> bool {
    let merge = matches!(
        mode,
        PathNormalization::MergeSlashes | PathNormalization::DecodeAndMergeSlashes
    );
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let mut prev = 0u8;
    for &b in bytes {
        if char_flags(b) & SPECIAL != 0 || (merge && b == b'/' && prev == b'/') {
            return false;
        }
        prev = b;
    }
    true
}

/// Applies a borrowing transformation to a `Cow`, keeping the original borrow (or buffer)
/// when the transformation changes nothing.
fn then<'a>(input: Cow<'a, str>, f: impl FnOnce(&str) -> Cow<'_, str>) -> Cow<'a, str> {
    match input {
        Cow::Borrowed(s) => f(s),
        Cow::Owned(s) => {
            let out = match f(&s) {
                Cow::Borrowed(b) if b.len() == s.len() => None,
                Cow::Borrowed(b) => Some(b.to_owned()),
                Cow::Owned(o) => Some(o),
            };
            Cow::Owned(out.unwrap_or(s))
        }
    }
}

/// An output buffer that stays a borrow of the input for as long as the output is a prefix
/// of it, and copies only on the first byte that differs. A canonical path therefore costs
/// no allocation.
struct Out<'a> {
    src: &'a [u8],
    /// `None` while the output is `src[..len]`.
    owned: Option<Vec<u8>>,
    len: usize,
}

impl<'a> Out<'a> {
    fn new(src: &'a str) -> Self {
        Out {
            src: src.as_bytes(),
            owned: None,
            len: 0,
        }
    }

    fn len(&self) -> usize {
        match &self.owned {
            Some(v) => v.len(),
            None => self.len,
        }
    }

    fn bytes(&self) -> &[u8] {
        match &self.owned {
            Some(v) => v,
            None => self.src.get(..self.len).unwrap_or_default(),
        }
    }

    fn at(&self, i: usize) -> u8 {
        self.bytes().get(i).copied().unwrap_or(0)
    }

    fn materialize(&mut self) -> &mut Vec<u8> {
        let (src, len) = (self.src, self.len);
        self.owned.get_or_insert_with(|| {
            let mut v = Vec::with_capacity(src.len() + 8);
            v.extend_from_slice(src.get(..len).unwrap_or_default());
            v
        })
    }

    fn push(&mut self, b: u8) {
        if self.owned.is_none() && self.src.get(self.len) == Some(&b) {
            self.len += 1;
        } else {
            self.materialize().push(b);
        }
    }

    fn truncate(&mut self, n: usize) {
        match &mut self.owned {
            Some(v) => v.truncate(n),
            None => self.len = self.len.min(n),
        }
    }

    fn set(&mut self, i: usize, b: u8) {
        if self.at(i) != b
            && let Some(slot) = self.materialize().get_mut(i)
        {
            *slot = b;
        }
    }

    fn finish(self, src: &'a str) -> Cow<'a, str> {
        match self.owned {
            None => match src.get(..self.len) {
                Some(s) => Cow::Borrowed(s),
                None => Cow::Owned(String::from_utf8_lossy(self.bytes()).into_owned()),
            },
            Some(v) => Cow::Owned(match String::from_utf8(v) {
                Ok(s) => s,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            }),
        }
    }
}

// Character classes of Envoy's Chromium path canonicaliser (`kPathCharLookup`).
/// Needs handling beyond a plain copy.
const SPECIAL: u8 = 1;
/// Must be percent-encoded in the output.
const ESCAPE_BIT: u8 = 2;
const ESCAPE: u8 = ESCAPE_BIT | SPECIAL;
/// Must be decoded when found percent-encoded (unreserved characters).
const UNESCAPE: u8 = 4;
/// Makes the path invalid (NUL).
const INVALID_BIT: u8 = 8;
const INVALID: u8 = INVALID_BIT | SPECIAL;

fn char_flags(b: u8) -> u8 {
    match b {
        0 => INVALID,
        0x01..=0x1f | 0x7f..=0xff => ESCAPE,
        b' ' | b'"' | b'#' | b'%' | b'<' | b'>' | b'?' | b'\\' | b'^' | b'`' | b'{' | b'|'
        | b'}' => ESCAPE,
        b'.' => SPECIAL,
        b'-' | b'_' | b'~' | b'0'..=b'9' | b'A'..=b'Z' | b'a'..=b'z' => UNESCAPE,
        // ! $ & ' ( ) * + , / : ; = @ [ ]
        _ => 0,
    }
}

fn is_slash(b: u8) -> bool {
    b == b'/' || b == b'\\'
}

/// Length of a dot at `i`: 1 for `.`, 3 for `%2e`/`%2E`, 0 for anything else.
fn dot_len(s: &[u8], i: usize) -> usize {
    match s.get(i..) {
        Some([b'.', ..]) => 1,
        Some([b'%', b'2', b'e' | b'E', ..]) => 3,
        _ => 0,
    }
}

/// The byte a valid `%XY` escape at `i` encodes.
fn decode_escape(s: &[u8], i: usize) -> Option<u8> {
    match s.get(i..i + 3) {
        Some([b'%', hi, lo]) => Some((hex_value(*hi)? << 4) | hex_value(*lo)?),
        _ => None,
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn push_escaped(out: &mut Out<'_>, b: u8) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.push(b'%');
    out.push(HEX[usize::from(b >> 4)]);
    out.push(HEX[usize::from(b & 0xf)]);
}

enum Dots {
    /// A dot inside a file name.
    NotADirectory,
    /// `.`: the current directory.
    Current,
    /// `..`: one level up.
    Up,
}

/// Classifies the dot ending at `after_dot` (preceded by a slash), and how many more input
/// bytes it consumes.
fn classify_after_dot(s: &[u8], after_dot: usize) -> (Dots, usize) {
    let end = s.len();
    if after_dot >= end {
        return (Dots::Current, 0);
    }
    if is_slash(s[after_dot]) {
        return (Dots::Current, 1);
    }
    let second = dot_len(s, after_dot);
    if second > 0 {
        let after_second = after_dot + second;
        if after_second >= end {
            return (Dots::Up, second);
        }
        if is_slash(s[after_second]) {
            return (Dots::Up, second + 1);
        }
    }
    (Dots::NotADirectory, 0)
}

/// Drops the last segment of the output, which ends with `/`, never going above the root.
fn back_up_to_previous_slash(out: &mut Out<'_>) {
    let Some(mut i) = out.len().checked_sub(1) else {
        return;
    };
    if i == 0 {
        return;
    }
    i -= 1;
    while out.at(i) != b'/' && i > 0 {
        i -= 1;
    }
    out.truncate(i + 1);
}

/// Chromium's guard against nested escapes (`%%30%30` must not become `%00` on a second
/// pass): when an unescaped byte completes a valid escape with an earlier stray `%`, that
/// `%` is written as `%25`.
fn check_nested_escapes(s: &[u8], next: usize, stray_percent: usize, out: &mut Out<'_>) {
    let length = out.len();
    let last_unescaped = out.at(length.saturating_sub(1));
    let append_next = stray_percent + 2 == length;
    if append_next {
        match s.get(next) {
            Some(&b) if b < 0x80 => out.push(b),
            _ => return,
        }
    }
    if decode_escape(out.bytes(), stray_percent).is_some() {
        if !append_next {
            let b = out.at(stray_percent + 1);
            out.push(b);
        }
        out.set(stray_percent + 1, b'2');
        out.set(stray_percent + 2, b'5');
        out.push(last_unescaped);
    } else if append_next {
        out.truncate(length);
    }
}

/// Envoy's `normalize_path` (its Chromium `CanonicalizePath` snapshot). Returns the path and
/// whether it is valid.
fn canonicalize(path: &str) -> (Cow<'_, str>, bool) {
    let s = path.as_bytes();
    let mut out = Out::new(path);
    let mut valid = true;
    match s.first() {
        None => {
            out.push(b'/');
            return (out.finish(path), true);
        }
        Some(&b) if !is_slash(b) => out.push(b'/'),
        Some(_) => {}
    }
    let mut stray_percent: Option<usize> = None;
    let mut i = 0;
    while i < s.len() {
        let ch = s[i];
        let flags = char_flags(ch);
        if flags & SPECIAL == 0 {
            out.push(ch);
        } else if let dots @ 1.. = dot_len(s, i) {
            if out.len() > 0 && out.at(out.len() - 1) == b'/' {
                match classify_after_dot(s, i + dots) {
                    (Dots::NotADirectory, _) => {
                        out.push(b'.');
                        i += dots - 1;
                    }
                    (Dots::Current, consumed) => i += dots + consumed - 1,
                    (Dots::Up, consumed) => {
                        back_up_to_previous_slash(&mut out);
                        i += dots + consumed - 1;
                    }
                }
            } else {
                out.push(b'.');
                i += dots - 1;
            }
        } else if ch == b'\\' {
            out.push(b'/');
        } else if ch == b'%' {
            if let Some(value) = decode_escape(s, i) {
                i += 2;
                let value_flags = char_flags(value);
                if value_flags & UNESCAPE != 0 {
                    out.push(value);
                    if let Some(p) = stray_percent
                        && p + 3 >= out.len()
                    {
                        check_nested_escapes(s, i + 1, p, &mut out);
                    }
                } else {
                    // Kept exactly as sent, hex case included.
                    out.push(b'%');
                    out.push(s[i - 1]);
                    out.push(s[i]);
                    if value_flags & INVALID_BIT != 0 {
                        valid = false;
                    }
                }
            } else {
                // A stray `%` is passed through.
                stray_percent = Some(out.len());
                out.push(b'%');
            }
        } else {
            if flags & INVALID_BIT != 0 {
                valid = false;
            }
            push_escaped(&mut out, ch);
        }
        i += 1;
    }
    (out.finish(path), valid)
}

/// Envoy's `UNESCAPE_AND_FORWARD`: `%2F`/`%2f` → `/`, `%5C`/`%5c` → `\`.
fn unescape_slashes(path: &str) -> Cow<'_, str> {
    let s = path.as_bytes();
    let mut out = Out::new(path);
    let mut i = 0;
    while i < s.len() {
        match s.get(i..i + 3) {
            Some([b'%', b'2', b'f' | b'F']) => {
                out.push(b'/');
                i += 3;
            }
            Some([b'%', b'5', b'c' | b'C']) => {
                out.push(b'\\');
                i += 3;
            }
            _ => {
                out.push(s[i]);
                i += 1;
            }
        }
    }
    out.finish(path)
}

/// Envoy's `merge_slashes`: runs of `/` collapse into one.
fn merge_slashes(path: &str) -> Cow<'_, str> {
    if !path.contains("//") {
        return Cow::Borrowed(path);
    }
    let mut out = String::with_capacity(path.len());
    let mut previous_slash = false;
    for c in path.chars() {
        if c == '/' && previous_slash {
            continue;
        }
        previous_slash = c == '/';
        out.push(c);
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::PathNormalization::{Base, DecodeAndMergeSlashes, MergeSlashes};
    use super::*;

    /// The one-pass check for an already-normal path agrees with the full normalisation.
    #[test]
    fn plain_paths_take_the_short_way_with_the_same_result() {
        let modes = [
            PathNormalization::Base,
            PathNormalization::MergeSlashes,
            PathNormalization::DecodeAndMergeSlashes,
        ];
        for path in [
            "/",
            "/a/b",
            "/a//b",
            "//",
            "a/b",
            "",
            "/a.b",
            "/a/./b",
            "/%41",
            "/a\\b",
            "/a b",
            "/a/b/",
            "/~x-y_z/0:@!$&'()*+,;=",
        ] {
            for mode in modes {
                let slow = match mode {
                    PathNormalization::Base => canonicalize(path).0,
                    PathNormalization::MergeSlashes => then(canonicalize(path).0, merge_slashes),
                    _ => then(
                        then(unescape_slashes(path), |p| canonicalize(p).0),
                        merge_slashes,
                    ),
                };
                let (fast, valid) = normalize(path, mode);
                assert_eq!((&*fast, valid), (&*slow, true), "{path:?} {mode:?}");
                if is_plain(path, mode) {
                    assert!(matches!(fast, Cow::Borrowed(_)), "{path:?}");
                }
            }
        }
        assert!(is_plain("/a//b", PathNormalization::Base));
        assert!(!is_plain("/a//b", PathNormalization::MergeSlashes));
        assert!(!is_plain("a", PathNormalization::Base));
    }

    fn base(p: &str) -> String {
        normalize_path(p, Base).into_owned()
    }

    #[test]
    fn none_leaves_every_path_alone() {
        for p in ["", "/a/../b", "a//b", "/a%2fb", "/a\\b", "/%41"] {
            let out = normalize_path(p, PathNormalization::None);
            assert!(matches!(out, Cow::Borrowed(s) if s == p), "{p}");
        }
        assert_eq!(
            try_normalize_path("/%00", PathNormalization::None).as_deref(),
            Ok("/%00")
        );
    }

    #[test]
    fn default_is_base() {
        assert_eq!(PathNormalization::default(), Base);
    }

    #[test]
    fn base_resolves_dot_segments() {
        assert_eq!(base("/public/../admin"), "/admin");
        assert_eq!(base("/a/./b"), "/a/b");
        assert_eq!(base("/a/b/../c"), "/a/c");
        assert_eq!(base("/./a/b"), "/a/b");
        assert_eq!(base("/a/b/../../../../c"), "/c");
    }

    #[test]
    fn dot_dot_never_climbs_above_root() {
        assert_eq!(base("/../a"), "/a");
        assert_eq!(base("/.."), "/");
        assert_eq!(base(".."), "/");
        assert_eq!(base("/../../"), "/");
    }

    #[test]
    fn trailing_dot_segments_leave_a_trailing_slash() {
        assert_eq!(base("/a/b/.."), "/a/");
        assert_eq!(base("/a/b/."), "/a/b/");
        assert_eq!(base("/a/b/%2e%2e"), "/a/");
    }

    #[test]
    fn dots_inside_names_are_not_segments() {
        for p in [
            "/a/..b",
            "/a/b..",
            "/a/.b/c",
            "/a/b./c",
            "/.well-known/x",
            "/a/...",
            "/a..b",
        ] {
            assert_eq!(base(p), p);
        }
    }

    #[test]
    fn empty_and_relative_paths_get_a_leading_slash() {
        assert_eq!(base(""), "/");
        assert_eq!(base("a/b/../c"), "/a/c");
        assert_eq!(base("a"), "/a");
    }

    #[test]
    fn encoded_dots_are_dots() {
        // Envoy's path_utility tests: %2E and %2e count as `.`.
        assert_eq!(base("/a/b/%2E%2E/c"), "/a/c");
        assert_eq!(base("/a/b/%2e%2e/c"), "/a/c");
        assert_eq!(base("/a/b/%2E./c"), "/a/c");
        assert_eq!(base("/a/b/%2E/c"), "/a/b/c");
        assert_eq!(base("/public/%2e%2e/admin"), "/admin");
        // ...and are decoded even inside a name.
        assert_eq!(base("/a%2eb"), "/a.b");
    }

    #[test]
    fn backslash_is_a_separator() {
        assert_eq!(base("/a/..\\c"), "/c");
        assert_eq!(base("/a\\b"), "/a/b");
        assert_eq!(base("\\a"), "/a");
    }

    #[test]
    fn unreserved_escapes_are_decoded_and_others_kept_as_sent() {
        assert_eq!(base("/%41dmin"), "/Admin");
        assert_eq!(base("/%61%2D%5f%7E%30"), "/a-_~0");
        // Reserved and non-ASCII escapes are kept, hex case included.
        assert_eq!(base("/%5c%25"), "/%5c%25");
        assert_eq!(base("/%c0%af"), "/%c0%af");
        assert_eq!(base("/a/%2F%2f/c"), "/a/%2F%2f/c");
        assert_eq!(base("/A/B/C"), "/A/B/C");
    }

    #[test]
    fn disallowed_characters_are_percent_encoded() {
        assert_eq!(base("/a b"), "/a%20b");
        assert_eq!(base("/a{b}|^`"), "/a%7Bb%7D%7C%5E%60");
        assert_eq!(base("/ü"), "/%C3%BC");
        assert_eq!(base("/a\u{7f}"), "/a%7F");
    }

    #[test]
    fn stray_percent_signs_pass_through() {
        assert_eq!(base("/100%"), "/100%");
        assert_eq!(base("/%zz"), "/%zz");
        assert_eq!(base("/%2"), "/%2");
        // A nested escape cannot turn into a new one: `%%30%30` is not `%00`.
        assert_eq!(base("/%%30%30"), "/%2500");
        assert_eq!(base("/%3%30"), "/%2530");
    }

    #[test]
    fn nul_is_rejected_by_try_and_kept_by_normalize() {
        for p in [
            "/xyz/.%00../abc",
            "/xyz/%00.%00./abc",
            "/xyz/AAAAA%%0000/abc",
            "/a\0b",
        ] {
            assert_eq!(try_normalize_path(p, Base), Err(InvalidPath), "{p}");
            assert_eq!(
                try_normalize_path(p, DecodeAndMergeSlashes),
                Err(InvalidPath),
                "{p}"
            );
        }
        assert_eq!(normalize_path("/a/%00/../b", Base), "/a/b");
        assert_eq!(normalize_path("/a%00b", Base), "/a%00b");
        assert_eq!(normalize_path("/a\0b", Base), "/a%00b");
        assert_eq!(try_normalize_path("/a/../b", Base).as_deref(), Ok("/b"));
    }

    #[test]
    fn normal_paths_are_borrowed() {
        for p in [
            "/",
            "/a/b",
            "/a/b/",
            "/a-b_c~d/%2F/%25",
            "/x.json",
            "/a/..b",
            "/a;b=c",
        ] {
            for mode in [Base, MergeSlashes] {
                let out = normalize_path(p, mode);
                assert!(matches!(out, Cow::Borrowed(s) if s == p), "{p} {mode:?}");
            }
        }
        assert!(matches!(
            normalize_path("/a/b", DecodeAndMergeSlashes),
            Cow::Borrowed("/a/b")
        ));
        // A path that only shrinks is still a borrow of its prefix.
        assert!(matches!(normalize_path("/a/.", Base), Cow::Borrowed("/a/")));
    }

    #[test]
    fn base_keeps_double_slashes() {
        assert_eq!(base("/a//b"), "/a//b");
        assert_eq!(base("//a"), "//a");
    }

    #[test]
    fn merge_slashes_collapses_runs_after_dot_segments() {
        let merge = |p| normalize_path(p, MergeSlashes).into_owned();
        assert_eq!(merge("/a//b"), "/a/b");
        assert_eq!(merge("//a///b//"), "/a/b/");
        assert_eq!(merge("/a/b"), "/a/b");
        assert_eq!(merge(""), "/");
        // Envoy resolves dot segments first, then merges: `..` pops the empty segment.
        assert_eq!(merge("/a//../b"), "/a/b");
        assert_eq!(merge("/a/../..//b"), "/b");
        // Encoded slashes are not slashes here.
        assert_eq!(merge("/a%2F%2Fb"), "/a%2F%2Fb");
    }

    #[test]
    fn decode_and_merge_slashes_decodes_encoded_separators() {
        let decode = |p| normalize_path(p, DecodeAndMergeSlashes).into_owned();
        assert_eq!(decode("/a%2Fb"), "/a/b");
        assert_eq!(decode("/a%2f%2F%2fb"), "/a/b");
        assert_eq!(decode("/a%5Cb%5cc"), "/a/b/c");
        assert_eq!(decode("/public%2F..%2Fadmin"), "/admin");
        assert_eq!(decode("/public%5c..%5cadmin"), "/admin");
        assert_eq!(decode("/public%2f%2e%2e%2fadmin"), "/admin");
        // Only slashes are decoded beyond what Base does.
        assert_eq!(decode("/a%25b%3F"), "/a%25b%3F");
        // Base alone leaves encoded slashes in place, so they are not separators there.
        assert_eq!(base("/public%2F..%2Fadmin"), "/public%2F..%2Fadmin");
    }

    #[test]
    fn split_path_query_separates_query_and_drops_fragment() {
        assert_eq!(split_path_query("/a?b=1&c"), ("/a", Some("b=1&c")));
        assert_eq!(split_path_query("/a?"), ("/a", Some("")));
        assert_eq!(split_path_query("/a"), ("/a", None));
        assert_eq!(split_path_query("/a??b"), ("/a", Some("?b")));
        assert_eq!(split_path_query("/a#frag?x"), ("/a", None));
        assert_eq!(split_path_query("/a?x=1#frag"), ("/a", Some("x=1")));
        assert_eq!(split_path_query(""), ("", None));
    }

    #[test]
    fn never_panics_on_arbitrary_input() {
        let alphabet = [
            "/", "\\", ".", "%", "2", "3", "e", "E", "f", "5", "c", "0", "%2e", "ü", "\0", "?",
        ];
        // Every string of up to 4 symbols from the alphabet, in every mode.
        let mut inputs = vec![String::new()];
        let mut level = vec![String::new()];
        for _ in 0..4 {
            level = level
                .iter()
                .flat_map(|s| alphabet.iter().map(move |a| format!("{s}{a}")))
                .collect();
            inputs.extend(level.iter().cloned());
        }
        for p in &inputs {
            for mode in [
                PathNormalization::None,
                Base,
                MergeSlashes,
                DecodeAndMergeSlashes,
            ] {
                let once = normalize_path(p, mode);
                if mode != PathNormalization::None {
                    assert!(once.starts_with('/'), "{p:?} {mode:?} -> {once:?}");
                }
                let _ = try_normalize_path(p, mode);
            }
        }
    }

    #[test]
    fn base_is_idempotent_on_valid_paths() {
        for p in [
            "/a/../b/./c",
            "/%41/%2e%2e/x",
            "/a b/ü",
            "/%%30%30",
            "a\\..\\b",
            "/a/b/..",
        ] {
            let once = base(p);
            assert_eq!(base(&once), once, "{p}");
        }
    }
}
