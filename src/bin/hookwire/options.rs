//! `hookwire send`'s options, checked and turned into one [`EndpointConfig`] per endpoint.
//!
//! Every option is checked before anything is sent: the CLI's own (`--header`, `--overflow`,
//! `--secret`, `--media-type`, `--name`), then each endpoint's URL, headers and timeouts
//! against the HTTP layer's rules; the engine checks the rest (`--batch`, `--max-in-flight`,
//! `--workers`...) when the endpoint is added. A rejected value is an [`Error::Config`]
//! naming the flag ([`flagged`]): exit code 2.

use std::collections::HashSet;
use std::time::Duration;

use hookwire::Error;
use hookwire::endpoint::EndpointConfig;
use hookwire::http::{HttpConfig, MediaType, Secret};
use hookwire::sink::Overflow;

use crate::duration::{Unit, parse as parse_duration};
use crate::send::SendArgs;

/// The reason of an [`Error::Config`], for clap (which names the flag itself).
fn reason(e: Error) -> String {
    match e {
        Error::Config { reason, .. } => reason,
        other => other.to_string(),
    }
}

/// `--header`, for clap. Its errors never quote the value: a header often carries a
/// credential (`Authorization: Bearer ...`), and clap quotes a value its parser rejects, so
/// this parser builds the whole message itself.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HeaderArg;

impl clap::builder::TypedValueParser for HeaderArg {
    type Value = (String, String);

    fn parse_ref(
        &self,
        _cmd: &clap::Command,
        arg: Option<&clap::Arg>,
        value: &std::ffi::OsStr,
    ) -> Result<Self::Value, clap::Error> {
        let flag = arg.map_or_else(|| "--header".to_owned(), ToString::to_string);
        let refuse = |why: String| {
            clap::Error::raw(
                clap::error::ErrorKind::ValueValidation,
                format!("invalid value for '{flag}': {why}\n"),
            )
        };
        let s = value
            .to_str()
            .ok_or_else(|| refuse("not UTF-8".to_owned()))?;
        parse_header(s).map_err(|e| refuse(reason(e)))
    }
}

/// `--overflow`, for clap.
pub(crate) fn overflow_arg(s: &str) -> Result<Overflow, String> {
    parse_overflow(s).map_err(reason)
}

/// `--media-type`, for clap.
pub(crate) fn media_type_arg(s: &str) -> Result<MediaType, String> {
    s.parse().map_err(reason)
}

/// `NAME:VALUE` (split at the first `:`, both sides trimmed).
pub(crate) fn parse_header(s: &str) -> Result<(String, String), Error> {
    // Never quote `s`: its value may be a credential.
    let (k, v) = s.split_once(':').ok_or_else(|| {
        Error::config(
            "--header",
            "a header has no ':' (expected NAME:VALUE; the value is not shown)",
        )
    })?;
    if k.trim().is_empty() {
        return Err(Error::config("--header", "a header has an empty name"));
    }
    Ok((k.trim().to_owned(), v.trim().to_owned()))
}

/// `block`, `block:DURATION` (a bare number: ms), `drop-newest`, `drop-oldest` or `reject`.
/// Plain `block` has no timeout here; [`endpoint_configs`] bounds it by `--timeout`.
pub(crate) fn parse_overflow(s: &str) -> Result<Overflow, Error> {
    match s.trim() {
        "block" => Ok(Overflow::Block { timeout: None }),
        "drop-newest" => Ok(Overflow::DropNewest),
        "drop-oldest" => Ok(Overflow::DropOldest),
        "reject" => Ok(Overflow::Reject),
        other => {
            let Some(wait) = other.strip_prefix("block:") else {
                return Err(Error::config(
                    "--overflow",
                    format!(
                        "{s:?} is not block, block:DURATION, drop-newest, drop-oldest or reject"
                    ),
                ));
            };
            let timeout = parse_duration(wait, Unit::Millis)
                .map_err(|why| Error::config("--overflow", format!("block:{why}")))?;
            Ok(Overflow::Block {
                timeout: Some(timeout),
            })
        }
    }
}

/// `host:port` of a URL (default ports filled in), for an endpoint's default name.
pub(crate) fn default_name(url: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let has_port = host
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok());
    match (host.is_empty(), has_port, scheme) {
        (true, _, _) => "endpoint".to_owned(),
        (false, true, _) => host.to_owned(),
        (false, false, "https") => format!("{host}:443"),
        (false, false, _) => format!("{host}:80"),
    }
}

/// The engine's name for a setting -> the flag that sets it.
pub(crate) fn flag_for(field: &str) -> Option<&'static str> {
    Some(match field {
        "name" => "--name",
        "url" => "--endpoint",
        "headers" | "header" => "--header",
        "timeout" => "--request-timeout",
        "connect_timeout" => "--connect-timeout",
        "capacity" => "--capacity",
        "overflow" => "--overflow",
        "max_attempts" => "--max-attempts",
        "max_age" => "--max-age",
        "secret" | "secrets" => "--secret",
        "media_type" => "--media-type",
        "batch.max_events" => "--batch",
        "batch.linger" => "--linger",
        "max_in_flight" => "--max-in-flight",
        "workers" => "--workers",
        "tls.ca_pem" => "--ca-file",
        _ => return None,
    })
}

/// Renames an [`Error::Config`]'s field to the flag that sets it.
pub(crate) fn flagged(e: Error) -> Error {
    match e {
        Error::Config { field, reason } => Error::Config {
            field: flag_for(field).unwrap_or(field),
            reason,
        },
        other => other,
    }
}

/// One [`EndpointConfig`] per `--endpoint`, every option applied, names unique, and URL,
/// headers, timeouts and secrets checked against the HTTP layer's rules.
pub(crate) fn endpoint_configs(args: &SendArgs) -> Result<Vec<EndpointConfig>, Error> {
    if args.names.len() > args.endpoints.len() {
        return Err(Error::config(
            "--name",
            format!(
                "{} names for {} endpoints",
                args.names.len(),
                args.endpoints.len()
            ),
        ));
    }
    let ms = Duration::from_millis;
    let overflow = match args.overflow {
        None | Some(Overflow::Block { timeout: None }) => Overflow::Block {
            timeout: Some(Duration::from_secs(args.timeout)),
        },
        Some(o) => o,
    };
    let mut taken = HashSet::new();
    let mut out = Vec::with_capacity(args.endpoints.len());
    for (i, url) in args.endpoints.iter().enumerate() {
        let base = args
            .names
            .get(i)
            .cloned()
            .unwrap_or_else(|| default_name(url));
        let mut name = base.clone();
        for k in 2.. {
            if taken.insert(name.clone()) {
                break;
            }
            name = format!("{base}#{k}");
        }
        let mut c = EndpointConfig::new(name, url.clone());
        c.headers.clone_from(&args.headers);
        c.secrets.clone_from(&args.secrets);
        if let Some(t) = args.request_timeout {
            c.timeout = ms(t);
        }
        c.connect_timeout = args.connect_timeout.map(ms);
        if let Some(n) = args.batch {
            c.batch.max_events = n;
        }
        if let Some(l) = args.linger {
            c.batch.linger = ms(l);
        }
        if let Some(n) = args.capacity {
            c.capacity = n;
        }
        c.overflow = overflow;
        c.max_attempts = args.max_attempts;
        c.max_age = args.max_age.map(Duration::from_secs);
        if let Some(n) = args.max_in_flight {
            c.max_in_flight = n;
        }
        if let Some(m) = args.media_type {
            c.media_type = m;
        }
        check_http(&c).map_err(|e| without_password(flagged(e), url))?;
        out.push(c);
    }
    tls(
        args,
        &mut out,
        &mut || hookwire::http::system_roots(),
        &mut std::io::stderr(),
    )?;
    Ok(out)
}

/// Applies `--ca-file` and `--insecure` to `configs`, and trusts the system's certificate
/// store (`system_roots`, as the store can be read: else a warning on `err`, and the webpki
/// roots and `--ca-file` only). Warns loudly on `err` for every endpoint not verified.
pub(crate) fn tls(
    args: &SendArgs,
    configs: &mut [EndpointConfig],
    system_roots: &mut dyn FnMut() -> Result<usize, Error>,
    err: &mut dyn std::io::Write,
) -> Result<(), Error> {
    let mut ca_pem = String::new();
    for path in &args.ca_files {
        let pem = std::fs::read_to_string(path)
            .map_err(|e| Error::config("--ca-file", format!("{}: {e}", path.display())))?;
        ca_pem.push_str(&pem);
        ca_pem.push('\n');
    }
    for name in &args.insecure {
        if !configs.iter().any(|c| c.name == *name || c.url == *name) {
            let names: Vec<&str> = configs.iter().map(|c| c.name.as_str()).collect();
            return Err(Error::config(
                "--insecure",
                format!(
                    "no endpoint is named {name:?} (or has that URL); the endpoints are {}",
                    names.join(", ")
                ),
            ));
        }
    }
    let mut system: Option<bool> = None;
    for c in configs.iter_mut() {
        if args.insecure.iter().any(|n| *n == c.name || *n == c.url) {
            c.tls.insecure = true;
            let _ = writeln!(
                err,
                "hookwire: WARNING: {}: TLS certificates are NOT verified (--insecure): anyone \
                 on the path can read and forge its deliveries",
                c.name
            );
            continue;
        }
        if !args.ca_files.is_empty() {
            c.tls.ca_pem = Some(ca_pem.clone());
        }
        if c.url.starts_with("https:") {
            c.tls.system_roots = *system.get_or_insert_with(|| match system_roots() {
                Ok(_) => true,
                Err(e) => {
                    let _ = writeln!(
                        err,
                        "hookwire: warning: {e}; https endpoints trust the webpki roots{} only",
                        if args.ca_files.is_empty() {
                            ""
                        } else {
                            " and --ca-file"
                        }
                    );
                    false
                }
            });
        }
    }
    Ok(())
}

/// `e` with the password of `url` (`scheme://user:PASSWORD@host/`), if it has one, cut out
/// of its message: an error must not print a credential.
fn without_password(e: Error, url: &str) -> Error {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?', '#'])
        .next()
        .unwrap_or("");
    let Some((userinfo, _)) = authority.rsplit_once('@') else {
        return e;
    };
    let Some((_, password)) = userinfo.split_once(':') else {
        return e;
    };
    match e {
        Error::Config { field, reason } if !password.is_empty() => Error::Config {
            field,
            reason: reason.replace(password, "***"),
        },
        other => other,
    }
}

/// Checks what the HTTP layer will check, before anything is started.
fn check_http(c: &EndpointConfig) -> Result<(), Error> {
    let secrets = c
        .secrets
        .iter()
        .map(|s| s.parse())
        .collect::<Result<Vec<Secret>, _>>()?;
    let mut h = HttpConfig::new(c.url.clone())
        .timeout(c.timeout)
        .media_type(c.media_type)
        .secrets(secrets);
    if let Some(d) = c.connect_timeout {
        h = h.connect_timeout(d);
    }
    for (k, v) in &c.headers {
        h = h.header(k.clone(), v.clone());
    }
    h.validate()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        send: SendArgs,
    }

    fn args(extra: &[&str]) -> Result<SendArgs, clap::Error> {
        let mut argv = vec!["hookwire", "--endpoint", "http://127.0.0.1:9/hook"];
        argv.extend_from_slice(extra);
        T::try_parse_from(argv).map(|t| t.send)
    }

    fn configs(extra: &[&str]) -> Result<Vec<EndpointConfig>, Error> {
        endpoint_configs(&args(extra).unwrap())
    }

    #[test]
    fn options_map_onto_every_endpoint() {
        let c = configs(&[
            "--endpoint",
            "https://user:pw@hooks.example.com/x",
            "--secret",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "--header",
            "X-Team: core",
            "--header",
            "Authorization:Bearer a:b",
            "--batch",
            "50",
            "--linger",
            "20",
            "--request-timeout",
            "2500",
            "--connect-timeout",
            "300",
            "--capacity",
            "77",
            "--overflow",
            "drop-oldest",
            "--max-attempts",
            "4",
            "--max-age",
            "60",
            "--max-in-flight",
            "3",
            "--media-type",
            "v1",
        ])
        .unwrap();
        assert_eq!(c.len(), 2);
        for e in &c {
            assert_eq!(e.secrets.len(), 1);
            assert_eq!(
                e.headers,
                [
                    ("X-Team".to_owned(), "core".to_owned()),
                    ("Authorization".to_owned(), "Bearer a:b".to_owned())
                ]
            );
            assert_eq!(
                (e.batch.max_events, e.batch.linger),
                (50, Duration::from_millis(20))
            );
            assert_eq!(e.timeout, Duration::from_millis(2500));
            assert_eq!(e.connect_timeout, Some(Duration::from_millis(300)));
            assert_eq!((e.capacity, e.overflow), (77, Overflow::DropOldest));
            assert_eq!(
                (e.max_attempts, e.max_age),
                (Some(4), Some(Duration::from_secs(60)))
            );
            assert_eq!((e.max_in_flight, e.media_type), (3, MediaType::V1));
        }
        assert_eq!(c[0].name, "127.0.0.1:9");
        assert_eq!(c[1].name, "hooks.example.com:443");
    }

    #[test]
    fn durations_take_units_and_bare_numbers_keep_their_old_unit() {
        let units = configs(&[
            "--linger",
            "20ms",
            "--request-timeout",
            "2s",
            "--connect-timeout",
            "1m",
            "--max-age",
            "1h30m",
            "--overflow",
            "block:2s",
            "--timeout",
            "1h",
        ])
        .unwrap();
        let bare = configs(&[
            "--linger",
            "20",
            "--request-timeout",
            "2000",
            "--connect-timeout",
            "60000",
            "--max-age",
            "5400",
            "--overflow",
            "block:2000",
            "--timeout",
            "3600",
        ])
        .unwrap();
        for c in [&units[0], &bare[0]] {
            assert_eq!(c.batch.linger, Duration::from_millis(20));
            assert_eq!(c.timeout, Duration::from_secs(2));
            assert_eq!(c.connect_timeout, Some(Duration::from_secs(60)));
            assert_eq!(c.max_age, Some(Duration::from_secs(5400)));
            assert_eq!(
                c.overflow,
                Overflow::Block {
                    timeout: Some(Duration::from_secs(2))
                }
            );
        }
        for (argv, flag) in [
            (&["--linger", "5x"][..], "--linger"),
            (&["--request-timeout", "1.5s"][..], "--request-timeout"),
            (&["--max-age", "1500ms"][..], "--max-age"),
            (&["--timeout", "2d"][..], "--timeout"),
            (&["--overflow", "block:5x"][..], "--overflow"),
        ] {
            let e = args(argv)
                .err()
                .unwrap_or_else(|| panic!("{argv:?} accepted"));
            assert_eq!(e.exit_code(), 2, "{argv:?}");
            assert!(e.to_string().contains(flag), "{argv:?}: {e}");
        }
    }

    #[test]
    fn defaults_are_the_libraries_except_a_bounded_block() {
        let c = configs(&[]).unwrap();
        let lib = EndpointConfig::new("x", "http://127.0.0.1:9/hook");
        let e = &c[0];
        assert_eq!(
            (e.timeout, e.capacity, e.max_in_flight),
            (lib.timeout, lib.capacity, lib.max_in_flight)
        );
        assert_eq!(e.batch, lib.batch);
        assert_eq!(
            e.overflow,
            Overflow::Block {
                timeout: Some(Duration::from_secs(30))
            }
        );
        let c = configs(&["--overflow", "block", "--timeout", "5"]).unwrap();
        assert_eq!(
            c[0].overflow,
            Overflow::Block {
                timeout: Some(Duration::from_secs(5))
            }
        );
        let c = configs(&["--overflow", "block:250"]).unwrap();
        assert_eq!(
            c[0].overflow,
            Overflow::Block {
                timeout: Some(Duration::from_millis(250))
            }
        );
    }

    #[test]
    fn names_default_to_host_port_and_are_unique() {
        let c = configs(&[
            "--endpoint",
            "http://127.0.0.1:9/other",
            "--endpoint",
            "http://h.example/",
        ])
        .unwrap();
        let names: Vec<_> = c.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["127.0.0.1:9", "127.0.0.1:9#2", "h.example:80"]);
        let c = configs(&["--endpoint", "http://x:1/", "--name", "a", "--name", "a"]).unwrap();
        assert_eq!((c[0].name.as_str(), c[1].name.as_str()), ("a", "a#2"));
        let e = configs(&["--name", "a", "--name", "b"]).unwrap_err();
        assert!(e.to_string().contains("--name"), "{e}");
        assert_eq!(default_name("http://[::1]:8080/x"), "[::1]:8080");
        assert_eq!(default_name("http://[::1]/x"), "[::1]:80");
        assert_eq!(default_name("nonsense"), "nonsense:80");
        assert_eq!(default_name("http:///x"), "endpoint");
    }

    #[test]
    fn bad_values_name_their_flag() {
        for (argv, flag) in [
            (&["--header", "NoColon"][..], "--header"),
            (&["--header", ":v"][..], "--header"),
            (&["--overflow", "sideways"][..], "--overflow"),
            (&["--overflow", "block:soon"][..], "--overflow"),
            (&["--media-type", "v3"][..], "--media-type"),
            (&["--batch", "many"][..], "--batch"),
            (&["--bogus"][..], "--bogus"),
        ] {
            let e = args(argv)
                .err()
                .unwrap_or_else(|| panic!("{argv:?} was accepted"));
            assert_eq!(e.exit_code(), 2, "{argv:?}");
            assert!(e.to_string().contains(flag), "{argv:?}: {e}");
        }
        let e = T::try_parse_from(["hookwire"]).err().unwrap();
        assert!(e.to_string().contains("--endpoint"), "{e}");
    }

    #[test]
    fn http_rules_are_checked_before_anything_starts() {
        for (argv, flag) in [
            (&["--endpoint", "ftp://x/"][..], "--endpoint"),
            (&["--header", "Content-Length: 5"][..], "--header"),
            (&["--header", "Bad Name: 5"][..], "--header"),
            (&["--request-timeout", "0"][..], "--request-timeout"),
            (&["--connect-timeout", "0"][..], "--connect-timeout"),
            (&["--secret", "whsec_!!"][..], "--secret"),
        ] {
            let e = configs(argv).unwrap_err();
            assert!(matches!(e, Error::Config { .. }), "{argv:?}: {e}");
            assert!(e.to_string().contains(flag), "{argv:?}: {e}");
        }
    }

    #[test]
    fn tls_flags_map_onto_their_endpoints() {
        let dir = std::env::temp_dir().join(format!("hookwire-ca-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ca = dir.join("ca.pem");
        std::fs::write(&ca, "PEM").unwrap();
        let ca = ca.to_str().unwrap();
        let a = args(&[
            "--endpoint",
            "https://a.example/x",
            "--endpoint",
            "https://b.example/x",
            "--name",
            "plain",
            "--name",
            "b",
            "--name",
            "a",
            "--ca-file",
            ca,
            "--insecure",
            "b",
            "--insecure",
            "https://b.example/x",
        ])
        .unwrap();
        let run = |a: &SendArgs, roots: Result<usize, Error>| {
            let mut c: Vec<EndpointConfig> = a
                .endpoints
                .iter()
                .enumerate()
                .map(|(i, u)| {
                    let name = a.names.get(i).cloned().unwrap_or_else(|| default_name(u));
                    EndpointConfig::new(name, u.clone())
                })
                .collect();
            let mut err = Vec::new();
            let mut roots = Some(roots);
            let mut calls = 0;
            let r = tls(
                a,
                &mut c,
                &mut || {
                    calls += 1;
                    roots.take().unwrap()
                },
                &mut err,
            );
            (r.map(|()| c), String::from_utf8(err).unwrap(), calls)
        };
        let (c, err, _) = run(&a, Ok(1));
        let c = c.unwrap();
        // plain (http): the CA, no system roots; b by name, a by its URL: not verified.
        assert_eq!(c[0].tls.ca_pem.as_deref(), Some("PEM\n"));
        assert!(!c[0].tls.insecure && !c[0].tls.system_roots);
        assert!(c[1].tls.insecure && c[2].tls.insecure);
        assert_eq!(err.matches("WARNING").count(), 2, "{err}");
        assert!(
            err.contains("hookwire: WARNING: b: TLS certificates are NOT verified"),
            "{err}"
        );

        let b = args(&[
            "--endpoint",
            "https://b.example/x",
            "--endpoint",
            "https://c.example/",
        ])
        .unwrap();
        let (c, err, calls) = run(&b, Ok(140));
        let c = c.unwrap();
        assert!(c[1].tls.system_roots && c[2].tls.system_roots && !c[0].tls.system_roots);
        assert_eq!((err.as_str(), calls), ("", 1), "the store is loaded once");
        let (c, err, _) = run(&b, Err(Error::config("tls.system_roots", "unreadable")));
        assert!(c.unwrap().iter().all(|c| !c.tls.system_roots));
        assert!(
            err.contains("unreadable; https endpoints trust the webpki roots only"),
            "{err}"
        );

        let bad = args(&["--insecure", "nobody"]).unwrap();
        let e = run(&bad, Ok(1)).0.unwrap_err().to_string();
        assert!(e.contains("--insecure") && e.contains("\"nobody\""), "{e}");
        let missing = args(&["--ca-file", "/no/such/ca.pem"]).unwrap();
        let e = run(&missing, Ok(1)).0.unwrap_err().to_string();
        assert!(
            e.contains("--ca-file") && e.contains("/no/such/ca.pem"),
            "{e}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn errors_never_print_a_credential() {
        let e = configs(&["--endpoint", "http://me:s3cr3t@x y/"]).unwrap_err();
        assert!(e.to_string().contains("--endpoint"), "{e}");
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
        for h in ["Authorization Bearer s3cr3t", ":s3cr3t"] {
            let e = args(&["--header", h]).err().unwrap().to_string();
            assert!(e.contains("--header") && !e.contains("s3cr3t"), "{e}");
        }
        let e = configs(&["--header", "X-Token: s3cr3t\u{1}"]).unwrap_err();
        assert!(!e.to_string().contains("s3cr3t"), "{e}");
    }

    #[test]
    fn engine_fields_map_to_flags() {
        let e = flagged(Error::config("batch.max_events", "must be 1 to 10,000"));
        assert_eq!(
            e.to_string(),
            "invalid config `--batch`: must be 1 to 10,000"
        );
        assert!(
            flagged(Error::config("workers", "x"))
                .to_string()
                .contains("--workers")
        );
        assert!(
            flagged(Error::config("unknown", "x"))
                .to_string()
                .contains("`unknown`")
        );
        assert!(matches!(flagged(Error::Closed), Error::Closed));
    }
}
