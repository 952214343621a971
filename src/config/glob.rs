//! Repository globs, for an endpoint's `repositories` filter.
//!
//! A docker repository name is path-like (`library/alpine`, `team/app/api`), so a glob works
//! on its `/`-separated parts: `*` matches any run of characters within one part, `**` any run
//! across parts (slashes included), `?` one character other than `/`; everything else matches
//! itself. `library/*` matches `library/alpine` but not `library/a/b`; `team/**` matches both
//! `team/app` and `team/app/api`; `*` alone matches a one-part name.

/// Whether `name` matches `pattern` (see the module docs).
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    matches(pattern.as_bytes(), name.as_bytes())
}

#[derive(Clone, Copy, PartialEq)]
enum Token {
    Byte(u8),
    /// `?`: one byte other than `/`.
    One,
    /// `*`: any run of bytes other than `/`.
    Star,
    /// `**`: any run of bytes.
    AnyRun,
}

fn matches(p: &[u8], s: &[u8]) -> bool {
    let mut tokens = Vec::with_capacity(p.len());
    let mut i = 0;
    while i < p.len() {
        tokens.push(match p[i] {
            b'*' if p.get(i + 1) == Some(&b'*') => {
                i += 1;
                Token::AnyRun
            }
            b'*' => Token::Star,
            b'?' => Token::One,
            c => Token::Byte(c),
        });
        i += 1;
    }
    // next[j]: whether the tokens after the current one match s[j..]; O(tokens x bytes),
    // never exponential whatever the stars.
    let n = s.len();
    let mut next = vec![false; n + 1];
    next[n] = true;
    let mut cur = vec![false; n + 1];
    for &t in tokens.iter().rev() {
        for j in (0..=n).rev() {
            cur[j] = match t {
                Token::Byte(c) => j < n && s[j] == c && next[j + 1],
                Token::One => j < n && s[j] != b'/' && next[j + 1],
                Token::Star => next[j] || (j < n && s[j] != b'/' && cur[j + 1]),
                Token::AnyRun => next[j] || (j < n && cur[j + 1]),
            };
        }
        std::mem::swap(&mut next, &mut cur);
    }
    next[0]
}

/// Why `pattern` is not a usable glob, if it is not.
pub(crate) fn check(pattern: &str) -> Result<(), String> {
    if pattern.trim().is_empty() {
        return Err("a repository glob is empty".into());
    }
    if pattern.len() > 256 {
        return Err(format!(
            "a repository glob is longer than 256 bytes ({pattern:.40}...)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::glob_match as m;

    #[test]
    fn parts_and_stars() {
        assert!(m("library/alpine", "library/alpine"));
        assert!(!m("library/alpine", "library/alpine2"));
        assert!(m("library/*", "library/alpine"));
        assert!(!m("library/*", "library/a/b"));
        assert!(!m("library/*", "other/alpine"));
        assert!(m("team/**", "team/app"));
        assert!(m("team/**", "team/app/api"));
        assert!(m("**/api", "team/app/api"));
        assert!(!m("*/api", "team/app/api"));
        assert!(m("*", "alpine"));
        assert!(!m("*", "library/alpine"));
        assert!(m("**", "a/b/c"));
        assert!(m("app-?", "app-1"));
        assert!(!m("app-?", "app-12"));
        assert!(!m("a?b", "a/b"));
        assert!(m("*-prod/*", "web-prod/api"));
        assert!(!m("", "x"));
        assert!(m("", ""));
        // A `**` before a `*`: the `**` takes the extra parts.
        assert!(m("**/x*/y", "a/b/x1/y"));
        assert!(!m("**/x*/y", "a/b/x1/z/y"));
    }

    #[test]
    fn many_stars_stay_fast() {
        let name = "a".repeat(200);
        let pattern = format!("{}b", "*a".repeat(50));
        assert!(!m(&pattern, &name));
    }
}
