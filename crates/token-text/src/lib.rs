//! Text from outside (a provider's `error_description`, a callback's
//! parameters, a URL to open) made safe to show, log or hand to a browser:
//! the client, the protocol, the daemon and the OAuth crate all show such
//! text, and none of them owns the others, so the rule lives here once.

/// How many characters of outside text reach a terminal or a log.
pub const MAX_SHOWN: usize = 300;

/// `text` without control characters (escape sequences, carriage returns,
/// bidi overrides could rewrite what a terminal shows) and clipped to `max`
/// characters, with `…` where it was cut.
pub fn clean(text: &str, max: usize) -> String {
    let mut out = String::with_capacity(text.len().min(max * 4));
    for (n, c) in text
        .chars()
        .filter(|c| !c.is_control() && !is_bidi_control(*c))
        .enumerate()
    {
        if n == max {
            out.push('…');
            break;
        }
        out.push(c);
    }
    out
}

fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}')
}

/// Whether a URL may be opened in the user's browser: `https`, or `http`
/// to a loopback address (the login's own redirect listener). Anything else
/// (`file:`, a program's path, `http` over a network, a URL with spaces or
/// control characters that a shell or opener might split) is only printed.
pub fn safe_to_open(url: &str) -> bool {
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return false;
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.is_empty() || authority.contains('\\') {
        return false;
    }
    match scheme.to_ascii_lowercase().as_str() {
        "https" => true,
        // No user info: `http://127.0.0.1@evil.example` goes to evil.example.
        "http" if !authority.contains('@') => is_loopback_authority(authority),
        _ => false,
    }
}

fn is_loopback_authority(authority: &str) -> bool {
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or_default(),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_go_and_long_text_is_clipped() {
        assert_eq!(clean("ok\x1b[2J\r\nthen\u{202E}x", 100), "ok[2Jthenx");
        assert_eq!(clean("abcdef", 3), "abc…");
        assert_eq!(clean("abc", 3), "abc");
    }

    #[test]
    fn only_https_and_loopback_http_open() {
        assert!(safe_to_open("https://as.example/authorize?x=1"));
        assert!(safe_to_open("HTTPS://as.example"));
        assert!(safe_to_open("http://127.0.0.1:8080/cb"));
        assert!(safe_to_open("http://[::1]:8080/"));
        assert!(safe_to_open("http://localhost/"));
        assert!(!safe_to_open("http://as.example/authorize"));
        assert!(!safe_to_open("http://127.0.0.1@evil.example/"));
        assert!(!safe_to_open("http://127.0.0.1.evil.example/"));
        assert!(!safe_to_open("file:///etc/passwd"));
        assert!(!safe_to_open("/usr/bin/xterm"));
        assert!(!safe_to_open("calc.exe"));
        assert!(!safe_to_open("https://as.example/ --flag"));
        assert!(!safe_to_open("javascript:alert(1)"));
        assert!(!safe_to_open("https://"));
    }
}
