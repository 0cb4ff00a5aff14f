//! The common config document, read without the TOML parser: nothing but
//! `[site.NAME]` tables of bare keys, each a basic string without escapes,
//! `true`/`false`, or a one-line array of such strings, with comments and
//! blank lines between. A config of a thousand sites is read in a fraction
//! of the full parse (most of a start's work), and what it gives is what
//! [`super::take_sites`] gives for the same text: the same names, keys,
//! values and spans, the sites in order of name (the TOML parser's tables
//! are sorted maps). The keys of a site are in the order written, not of
//! key as the full parse gives them: no sort for each of a thousand sites,
//! and a site table's order counts for nothing (`parse_site` looks its keys
//! up, and tells the first unknown one in order of key).
//!
//! Anything else (another table, a quoted or dotted key, an escape, a
//! number, a multi-line array, a key or table written twice, a control
//! character) is `None`, and the full parse reads the document as before,
//! so every error keeps its words and its line. The unit tests and the
//! `config_file` fuzz target check the two agree on every text this
//! accepts.

use toml::Value;

use super::{Key, SiteTables};

/// Reads a document in the common form, handing each site to `site` as
/// soon as its table ends: its name, where the name is, and its entries
/// (to take the values out of). One table's entries are in memory at a
/// time. `None` for any other document (`site` may have had some of its
/// sites by then). A name written twice is the caller's to notice.
pub(super) fn read(
    text: &str,
    mut site: impl FnMut(String, usize, &mut [(Key, usize, Option<Value>)]),
) -> Option<()> {
    let b = text.as_bytes();
    // A `\r` only before a `\n` (checked by each line when there is one).
    let cr = b.contains(&b'\r');
    let mut current: Option<(String, usize)> = None;
    let mut entries: Vec<(Key, usize, Option<Value>)> = Vec::with_capacity(16);
    let mut pos = 0;
    while pos < b.len() {
        let end = line_end(b, pos, cr)?;
        let line = &b[pos..end];
        let start = pos + skip_ws(line, 0);
        let rest = &b[start..end];
        if rest.is_empty() || rest[0] == b'#' {
            comment(b, start, end)?;
        } else if rest[0] == b'[' {
            let header = header(text, start, end)?;
            if let Some((name, at)) = current.replace(header) {
                site(name, at, &mut entries);
                entries.clear();
            }
        } else {
            let (key, at, value) = entry(text, start, end)?;
            current.as_ref()?;
            // A handful of keys: a scan.
            if entries.iter().any(|(k, _, _)| same_key(k, &key)) {
                return None;
            }
            entries.push((key, at, Some(value)));
        }
        pos = next_line(b, end);
    }
    if let Some((name, at)) = current {
        site(name, at, &mut entries);
    }
    Some(())
}

/// The sites of a document in the common form, as `take_sites` would give
/// them; `None` for any other document.
fn sites(text: &str) -> Option<SiteTables> {
    let mut tables = SiteTables::default();
    read(text, |name, at, entries| {
        tables.push_site(name, at);
        for (key, at, value) in entries {
            if let Some(value) = value.take() {
                tables.push_entry(*at, std::mem::take(key), value);
            }
        }
    })?;
    tables.sites.sort_by(|(a, _, _), (b, _, _)| a.cmp(b));
    if tables.sites.windows(2).any(|w| w[0].0 == w[1].0) {
        return None;
    }
    Some(tables)
}

/// Whether two keys of one table are the same: two known keys are the
/// same one only as the same text of the key list (no bytes compared), an
/// unknown key is none of them.
fn same_key(a: &Key, b: &Key) -> bool {
    match (a, b) {
        (Key::Borrowed(a), Key::Borrowed(b)) => std::ptr::eq(*a, *b),
        (Key::Owned(a), Key::Owned(b)) => a == b,
        _ => false,
    }
}

/// Where the line from `pos` ends (at `\n`, `\r\n` or the end): `None` for
/// a lone `\r` (looked for only if the text has one: `cr`).
fn line_end(b: &[u8], pos: usize, cr: bool) -> Option<usize> {
    let nl = b[pos..]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(b.len(), |i| pos + i);
    if !cr {
        return Some(nl);
    }
    let end = if nl < b.len() && nl > pos && b[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    (!b[pos..end].contains(&b'\r')).then_some(end)
}

fn next_line(b: &[u8], end: usize) -> usize {
    match b.get(end) {
        Some(b'\r') => end + 2,
        _ => end + 1,
    }
}

#[inline(always)]
fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && (b[i] == b' ' || b[i] == b'\t') {
        i += 1;
    }
    i
}

/// What may follow on a line: spaces, then nothing or a comment.
fn comment(b: &[u8], from: usize, end: usize) -> Option<()> {
    let i = skip_ws(&b[..end], from);
    if i == end {
        return Some(());
    }
    (b[i] == b'#' && b[i + 1..end].iter().all(|&c| c == b'\t' || c >= 0x20) && !has_del(&b[i..end]))
        .then_some(())
}

fn has_del(b: &[u8]) -> bool {
    b.contains(&0x7f)
}

/// The bytes of a bare key: `A-Za-z0-9_-`.
const BARE: [bool; 256] = {
    let mut t = [false; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        c += 1;
    }
    t
};

#[inline(always)]
fn is_bare(c: u8) -> bool {
    BARE[usize::from(c)]
}

/// A bare key at `i`: its end.
#[inline(always)]
fn bare_key(b: &[u8], i: usize, end: usize) -> Option<usize> {
    let mut j = i;
    while j < end && is_bare(b[j]) {
        j += 1;
    }
    (j > i).then_some(j)
}

/// `[site.NAME]`: the name, and where it is.
fn header(text: &str, start: usize, end: usize) -> Option<(String, usize)> {
    let b = text.as_bytes();
    let i = start + 1;
    if b.get(i..i + 5)? != b"site." {
        return None;
    }
    let name_start = i + 5;
    let name_end = bare_key(b, name_start, end)?;
    if b.get(name_end) != Some(&b']') {
        return None;
    }
    comment(b, name_end + 1, end)?;
    // Bare: ASCII, so the slice is on character boundaries.
    let name = text.get(name_start..name_end)?.to_owned();
    Some((name, name_start))
}

/// `KEY = VALUE`, then nothing or a comment: the key, where it is, the value.
fn entry(text: &str, start: usize, end: usize) -> Option<(Key, usize, Value)> {
    let b = text.as_bytes();
    let key_end = bare_key(b, start, end)?;
    let eq = skip_ws(&b[..end], key_end);
    if b.get(eq) != Some(&b'=') {
        return None;
    }
    let v = skip_ws(&b[..end], eq + 1);
    let (value, value_end) = value(text, v, end)?;
    comment(b, value_end, end)?;
    let key = text.get(start..key_end)?;
    // A site key is not copied: one of the thousands a start reads.
    let key = match super::site::key(key) {
        Some((known, _)) => Key::Borrowed(known),
        None => Key::Owned(key.to_owned()),
    };
    Some((key, start, value))
}

fn value(text: &str, i: usize, end: usize) -> Option<(Value, usize)> {
    let b = text.as_bytes();
    match *b.get(i)? {
        b'"' => {
            let (s, j) = string(text, i, end)?;
            Some((Value::String(s), j))
        }
        b'[' => {
            let mut items = Vec::new();
            let mut j = skip_ws(&b[..end], i + 1);
            loop {
                if b.get(j) == Some(&b']') && j < end {
                    return Some((Value::Array(items), j + 1));
                }
                let (s, k) = string(text, j, end)?;
                items.push(Value::String(s));
                j = skip_ws(&b[..end], k);
                match b.get(j) {
                    Some(b',') if j < end => j = skip_ws(&b[..end], j + 1),
                    Some(b']') if j < end => return Some((Value::Array(items), j + 1)),
                    _ => return None,
                }
            }
        }
        _ if b[i..end].starts_with(b"true")
            && !b[i + 4..end].first().is_some_and(|&c| is_bare(c)) =>
        {
            Some((Value::Boolean(true), i + 4))
        }
        _ if b[i..end].starts_with(b"false")
            && !b[i + 5..end].first().is_some_and(|&c| is_bare(c)) =>
        {
            Some((Value::Boolean(false), i + 5))
        }
        _ => None,
    }
}

/// A basic string at `i` (`"`) with no escape and no control character:
/// its text, and where it ends (past the closing quote).
fn string(text: &str, i: usize, end: usize) -> Option<(String, usize)> {
    let b = text.as_bytes();
    if b.get(i) != Some(&b'"') || i >= end {
        return None;
    }
    let body = i + 1;
    let mut close = body;
    loop {
        match *b[..end].get(close)? {
            b'"' => break,
            b'\\' | 0x7f => return None,
            c if c < 0x20 && c != b'\t' => return None,
            _ => close += 1,
        }
    }
    // A `"""` opens a multi-line string: not this form.
    if close == body && b.get(close + 1) == Some(&b'"') {
        return None;
    }
    // Between two ASCII quotes of a `str`: on character boundaries.
    Some((text.get(body..close)?.to_owned(), close + 1))
}

/// What the full parse gives: `take_sites` of the parsed document, when
/// the document has nothing but sites.
fn full(text: &str) -> Option<SiteTables> {
    let mut root = toml::de::DeTable::parse(text).ok()?.into_inner();
    if root.is_empty() {
        return Some(SiteTables::default());
    }
    let sites = super::take_sites(&mut root).ok()??;
    root.is_empty().then_some(sites)
}

/// For the tests and the `config_file` fuzz target: panics unless the fast
/// read of `text`, where it reads one, is what the full parse gives (the
/// names, keys, values and where each name and key is; the sites in
/// order, the keys of each in any).
#[doc(hidden)]
#[allow(clippy::panic)] // a check for the tests and the fuzzer: a panic is its finding
pub fn check_fast_read(text: &str) {
    let Some(fast) = sites(text) else {
        return;
    };
    let Some(full) = full(text) else {
        panic!("the fast read took a text the full parse does not: {text:?}");
    };
    assert_eq!(fast.shown(), full.shown(), "{text:?}");
}

impl SiteTables {
    /// Each site as its name and where it is, with its entries in order
    /// of key.
    #[allow(clippy::type_complexity)]
    fn shown(&self) -> Vec<(String, usize, Vec<(String, usize, Option<Value>)>)> {
        self.sites
            .iter()
            .map(|(name, at, run)| {
                let mut entries: Vec<_> = self.entries[run.clone()]
                    .iter()
                    .map(|(k, at, v)| (k.to_string(), *at, v.clone()))
                    .collect();
                entries.sort_by(|a, b| a.0.cmp(&b.0));
                (name.clone(), *at, entries)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agree(text: &str) {
        check_fast_read(text);
    }

    const READ: &[&str] = &[
        "",
        "\n\n# only a comment\n",
        "[site.corp]\nissuer = \"https://auth.example.com\"\nclient_id = \"abc\"\nscopes = [\"read\", \"write\"]\n",
        "[site.b]\nz = \"1\"\na = true\n\n[site.a]\nk = false # no\n",
        "  [site.x]   # a comment\n\tkey=\"v\"\t\nlist = [ ]\nl2 = [\"a\",]\nl3 = [ \"a\" , \"b\" ]\n",
        "[site.crlf]\r\nissuer = \"https://a\"\r\nclient_id = \"é ü \t tab\"\r\n",
        "[site.no-newline]\nk = \"v\"",
        "[site.n1]\nempty = \"\"\n",
        "# head\n[site.A_b-9]\nx = \"#not a comment\"\n",
    ];

    const LEFT_TO_THE_FULL_PARSE: &[&str] = &[
        "top = \"x\"\n",
        "[daemon]\nstore = \"file\"\n",
        "[site.a]\nk = \"v\"\n[site.a]\nj = \"w\"\n",
        "[site.a]\nk = \"v\"\nk = \"w\"\n",
        "[site.\"quoted\"]\nk = \"v\"\n",
        "[site.a.b]\nk = \"v\"\n",
        "[[site.a.file]]\npath = \"/x\"\n",
        "[site.a]\nk = \"a\\\"b\"\n",
        "[site.a]\nk = 'literal'\n",
        "[site.a]\nk = 5\n",
        "[site.a]\nk = \"\"\"multi\"\"\"\n",
        "[site.a]\nk = [\n\"a\"]\n",
        "[site.a]\nk.j = \"v\"\n",
        "[site.a]\nk = \"v\" trailing\n",
        "[site.a]\nk = truex\n",
        "[site.a]\rk = \"v\"\n",
        "[site.a]\nk = \"v\x01\"\n",
        "[site.a]\n# bad \x01 comment\n",
        "[ site.a ]\nk = \"v\"\n",
        "[site]\nk = \"v\"\n",
        "[site.a]\nk = { x = \"y\" }\n",
        "[site.a]\nk = [\"a\", 1]\n",
        "[site.a]\nk = [\"a\" \"b\"]\n",
        "\u{feff}[site.a]\nk = \"v\"\n",
        // Found by the fuzzer: a `\r` that ends the text is no line end.
        "#2@t3 c\r",
        "[site.a]\nk = \"v\"\r",
    ];

    #[test]
    fn the_common_form_is_read_as_the_full_parse_reads_it() {
        for text in READ {
            assert!(sites(text).is_some(), "not read: {text:?}");
            agree(text);
        }
    }

    #[test]
    fn anything_else_is_left_to_the_full_parse() {
        for text in LEFT_TO_THE_FULL_PARSE {
            assert!(sites(text).is_none(), "read: {text:?}");
        }
    }

    #[test]
    fn a_thousand_generated_sites_are_read_alike() {
        let mut text = String::new();
        for i in 0..1000 {
            text.push_str(&format!(
                "[site.s{i}]\nissuer = \"https://auth{}.example.com\"\nclient_id = \"c{i}\"\nclient_secret_env = \"CC\"\ngrant = \"client_credentials\"\nscopes = [\"read\", \"write\"]\n\n",
                i % 7
            ));
        }
        assert!(sites(&text).is_some());
        agree(&text);
    }
}

#[cfg(test)]
mod parse_tests {
    use std::path::Path;

    use super::super::Config;

    /// The same document read fast (each site parsed as its table ends)
    /// and by the full parse (an empty `[daemon]` table sends it there):
    /// the same sites, and the same errors, in the same order, at the
    /// same lines.
    #[test]
    fn the_fast_read_and_the_full_parse_make_the_same_config() {
        let text = "\
[site.zeta]
issuer = \"https://z.example\"
client_id = \"z\"
scops = [\"read\"]

[site.alpha]
issuer = \"http://a.example\"
client_id = \"a\"

[site.mid]
issuer = \"https://m.example\"
client_id = \"m\"
client_secret_env = \"M\"
grant = \"client_credentials\"
scopes = [\"read\", \"write\"]

[site.nocid]
issuer = \"https://n.example\"
";
        let path = Path::new("/c.toml");
        assert!(super::sites(text).is_some(), "read fast");
        let fast = Config::parse(path, text);
        let full = Config::parse(path, &format!("{text}\n[daemon]\n"));
        let shown = |c: &Config| c.errors.iter().map(ToString::to_string).collect::<Vec<_>>();
        assert_eq!(shown(&fast), shown(&full));
        assert_eq!(fast.errors.len(), 3, "{:?}", shown(&fast));
        assert!(shown(&fast)[0].starts_with("/c.toml:7: site alpha: key `issuer`"));
        assert_eq!(fast.sites, full.sites);
        assert_eq!(fast.sites.keys().collect::<Vec<_>>(), ["mid"]);
        assert_eq!(fast.broken, full.broken);
        // A site written twice: the full parse's words.
        let twice = "[site.a]\nclient_id = \"a\"\n[site.a]\nclient_id = \"b\"\n";
        assert!(Config::parse(path, twice).unparsable.is_some());
    }
}
