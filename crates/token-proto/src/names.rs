//! Names the user types and both sides check: site names (the config's
//! `[site.NAME]` rule), and the closest known name for "did you mean".

/// Whether `name` may name a site: `[A-Za-z0-9._-]+`, as `[site.NAME]` in
/// the config file requires.
pub fn is_site_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

/// The known name closest to `word` (at most two edits away), for "did you
/// mean"; ties go to the first in `known`.
pub fn closest<'a>(word: &str, known: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    known
        .into_iter()
        .map(|k| (distance(word, k), k))
        .filter(|(d, k)| *d <= 2 && *d < k.chars().count())
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

/// Levenshtein distance: insertions, deletions and substitutions.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn site_names_and_suggestions() {
        assert!(is_site_name("corp-2.eu_x"));
        assert!(!is_site_name("bad name!") && !is_site_name(""));
        assert_eq!(closest("gett", ["get", "login", "kube"]), Some("get"));
        assert_eq!(closest("formt", ["min-ttl", "format"]), Some("format"));
        assert_eq!(closest("frobnicate", ["get", "login"]), None);
        // Two edits would turn any short word into another.
        assert_eq!(closest("xy", ["ab"]), None);
    }
}
