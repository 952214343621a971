//! Where `hookwire send` takes its signing secrets from, without ever printing one.
//!
//! A secret on the command line (`--secret`) is visible to every user of the machine in `ps`
//! and `/proc/PID/cmdline`, so two other sources keep it out of there: `--secret-file PATH`
//! (one secret per line) and the `HOOKWIRE_SECRET` environment variable (secrets separated
//! by whitespace), read only when neither flag is given. Every source is checked here, and an
//! error names the source and the secret's position in it, never its value: clap would quote
//! a rejected value, so `--secret` is taken as plain text and checked here instead.

use std::path::Path;

use hookwire::Error;
use hookwire::http::Secret;

use crate::send::SendArgs;

/// How a Standard Webhooks secret starts.
const PREFIX: &str = "whsec_";

/// The environment variable read when neither `--secret` nor `--secret-file` is given.
pub(crate) const ENV: &str = "HOOKWIRE_SECRET";

/// The secrets to sign with, in order: every `--secret`, then every line of `file`; or, if
/// there are neither, those in `env` (the value of [`ENV`], if set). Each is checked (and
/// trimmed). Errors are [`Error::Config`] naming the flag or the variable, without the value.
pub(crate) fn resolve(
    flags: &[String],
    file: Option<&Path>,
    env: Option<String>,
) -> Result<Vec<String>, Error> {
    let mut out = Vec::new();
    for (i, s) in flags.iter().enumerate() {
        out.push(
            checked(s)
                .map_err(|why| Error::config("--secret", format!("secret #{} is {why}", i + 1)))?,
        );
    }
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|e| {
            // io::Error's text never holds the file's contents; but a secret given where the
            // path belongs (`--secret-file whsec_...`) must not be printed as a path.
            let shown = path.display().to_string();
            let shown = if shown.trim_start().starts_with(PREFIX) {
                "the value (it looks like a secret, not a path)".to_owned()
            } else {
                shown
            };
            Error::config("--secret-file", format!("{shown}: {e}"))
        })?;
        let before = out.len();
        for (n, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            out.push(checked(line).map_err(|why| {
                Error::config(
                    "--secret-file",
                    format!("{} line {}: the secret is {why}", path.display(), n + 1),
                )
            })?);
        }
        if out.len() == before {
            return Err(Error::config(
                "--secret-file",
                format!("{} holds no secret", path.display()),
            ));
        }
    }
    if flags.is_empty()
        && file.is_none()
        && let Some(value) = env
    {
        for (i, s) in value.split_whitespace().enumerate() {
            out.push(checked(s).map_err(|why| {
                Error::config("--secret", format!("{ENV}: secret #{} is {why}", i + 1))
            })?);
        }
        if out.is_empty() {
            return Err(Error::config(
                "--secret",
                format!("{ENV} is set but holds no secret (unset it to send unsigned)"),
            ));
        }
    }
    Ok(out)
}

/// `args` with every secret in `args.secrets` (from `--secret`, `--secret-file` or
/// [`ENV`]), checked.
pub(crate) fn resolved(args: &SendArgs) -> Result<SendArgs, Error> {
    let env = std::env::var_os(ENV).map(|v| v.to_string_lossy().into_owned());
    let mut out = args.clone();
    out.secrets = resolve(&args.secrets, args.secret_file.as_deref(), env)?;
    out.secret_file = None;
    Ok(out)
}

/// `s` trimmed, if it is a valid secret; otherwise why not (never quoting it).
fn checked(s: &str) -> Result<String, String> {
    match s.parse::<Secret>() {
        Ok(_) => Ok(s.trim().to_owned()),
        Err(Error::Config { reason, .. }) => Err(reason_without(&reason, s)),
        Err(other) => Err(reason_without(&other.to_string(), s)),
    }
}

/// `reason`, lower-cased at its start, with any copy of `secret` cut out: a reason must never
/// carry the value, whatever the library's message says.
fn reason_without(reason: &str, secret: &str) -> String {
    let secret = secret.trim();
    let reason = if secret.len() >= 4 && reason.contains(secret) {
        reason.replace(secret, "<redacted>")
    } else {
        reason.to_owned()
    };
    reason
        .strip_prefix("the secret is ")
        .map_or_else(|| format!("invalid: {reason}"), str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const BAD: &str = "whsec_sup3rs3cret*";
    const OTHER: &str = "whsec_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    fn file(name: &str, text: &str) -> std::path::PathBuf {
        let p =
            std::env::temp_dir().join(format!("hookwire-secrets-{name}-{}", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn flags_then_file_lines_in_order() {
        let f = file("order", &format!("\n  {GOOD}  \r\n\n{OTHER}\n"));
        let got = resolve(&[format!(" {GOOD}")], Some(&f), Some("whsec_BBBB".into())).unwrap();
        assert_eq!(got, [GOOD, GOOD, OTHER], "the environment is not read");
        std::fs::remove_file(f).unwrap();
    }

    #[test]
    fn the_environment_is_the_fallback() {
        assert_eq!(
            resolve(&[], None, Some(format!(" {GOOD}\n {OTHER} "))).unwrap(),
            [GOOD, OTHER]
        );
        assert!(resolve(&[], None, None).unwrap().is_empty());
        let e = resolve(&[], None, Some("  ".into())).unwrap_err();
        assert!(
            e.to_string()
                .contains("HOOKWIRE_SECRET is set but holds no secret"),
            "{e}"
        );
    }

    #[test]
    fn errors_name_the_source_never_the_value() {
        let f = file("bad", &format!("{GOOD}\n{BAD}\n"));
        let cases = [
            (
                resolve(&[GOOD.into(), BAD.into()], None, None),
                "--secret",
                "secret #2",
            ),
            (resolve(&[], Some(&f), None), "--secret-file", "line 2"),
            (
                resolve(&[], None, Some(format!("{GOOD} {BAD}"))),
                "HOOKWIRE_SECRET",
                "#2",
            ),
            (resolve(&["".into()], None, None), "--secret", "empty"),
        ];
        for (got, source, where_) in cases {
            let e = got.unwrap_err().to_string();
            assert!(e.contains(source) && e.contains(where_), "{e}");
            assert!(!e.contains("sup3r"), "the secret leaked: {e}");
        }
        std::fs::remove_file(&f).unwrap();
        let e = resolve(&[], Some(&f), None).unwrap_err().to_string();
        assert!(
            e.contains("--secret-file") && e.contains("No such file"),
            "{e}"
        );
        let e = resolve(&[], Some(Path::new(BAD)), None)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("looks like a secret") && !e.contains("sup3r"),
            "{e}"
        );
        let empty = file("empty", "\n\n");
        let e = resolve(&[], Some(&empty), None).unwrap_err().to_string();
        assert!(e.contains("holds no secret"), "{e}");
        std::fs::remove_file(empty).unwrap();
    }

    #[test]
    fn a_reason_that_quotes_the_secret_is_redacted() {
        assert_eq!(
            reason_without("bad key whsec_xyz1", " whsec_xyz1 "),
            "invalid: bad key <redacted>"
        );
        assert_eq!(reason_without("the secret is empty", ""), "empty");
    }
}
