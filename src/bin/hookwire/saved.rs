//! `DIR/send.json`: the endpoint settings of the last `hookwire send --data-dir DIR`, so that
//! `--resume` can deliver what it left with the same endpoints (a durable endpoint resumes by
//! its name) without the user repeating every flag.
//!
//! No secret is written: `--secret` values are not saved (only that there were some, so that
//! a resume without them is refused rather than sending unsigned requests), `--header` values
//! are not saved (an `Authorization` header is a credential; only the names are kept, for the
//! same check), and a URL with credentials in it (`user:pw@host`) is not saved either. The file
//! is written atomically (temporary file, fsync, rename), readable by its owner only.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use hookwire::Error;
use hookwire::http::MediaType;
use serde::{Deserialize, Serialize};

use crate::send::SendArgs;

/// The file's name in the data directory.
pub(crate) const FILE: &str = "send.json";

/// The format's version: a newer file is refused rather than misread.
const VERSION: u32 = 1;

/// One endpoint as saved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct SavedEndpoint {
    /// Its name (the key of its cursor in the store).
    pub(crate) name: String,
    /// Its URL; `None` when it held credentials and was not saved.
    pub(crate) url: Option<String>,
}

/// What `DIR/send.json` holds: every `send` flag that shapes an endpoint, except secrets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Saved {
    /// [`VERSION`].
    pub(crate) version: u32,
    /// The endpoints, in `--endpoint` order.
    pub(crate) endpoints: Vec<SavedEndpoint>,
    /// Whether requests were signed (`--secret`): a resume needs the secrets again.
    pub(crate) signed: bool,
    /// The names of the `--header`s sent (values are not saved): a resume needs them again.
    pub(crate) headers: Vec<String>,
    /// `--batch`.
    pub(crate) batch: Option<usize>,
    /// `--linger`, ms.
    pub(crate) linger: Option<u64>,
    /// `--request-timeout`, ms.
    pub(crate) request_timeout: Option<u64>,
    /// `--connect-timeout`, ms.
    pub(crate) connect_timeout: Option<u64>,
    /// `--capacity`.
    pub(crate) capacity: Option<usize>,
    /// `--max-attempts`.
    pub(crate) max_attempts: Option<u32>,
    /// `--max-age`, s.
    pub(crate) max_age: Option<u64>,
    /// `--max-in-flight`.
    pub(crate) max_in_flight: Option<usize>,
    /// `--media-type`, as its full media type string.
    pub(crate) media_type: Option<String>,
}

/// Whether `url` has credentials in its authority (`scheme://user[:pw]@host`).
fn has_credentials(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    authority.contains('@')
}

impl Saved {
    /// The settings of `args`, with the endpoints' final `names` (in `--endpoint` order).
    pub(crate) fn new(args: &SendArgs, names: &[String]) -> Saved {
        let endpoints = args
            .endpoints
            .iter()
            .zip(names)
            .map(|(url, name)| SavedEndpoint {
                name: name.clone(),
                url: (!has_credentials(url)).then(|| url.clone()),
            })
            .collect();
        Saved {
            version: VERSION,
            endpoints,
            signed: !args.secrets.is_empty(),
            headers: args.headers.iter().map(|(k, _)| k.clone()).collect(),
            batch: args.batch,
            linger: args.linger,
            request_timeout: args.request_timeout,
            connect_timeout: args.connect_timeout,
            capacity: args.capacity,
            max_attempts: args.max_attempts,
            max_age: args.max_age,
            max_in_flight: args.max_in_flight,
            media_type: args.media_type.map(|m| m.as_str().to_owned()),
        }
    }

    /// These settings, keeping the endpoints of `old` (the file this run replaces) that this
    /// run does not have, with their URLs, so that a later `--resume` still delivers their
    /// backlog: a saved endpoint is never dropped. The requirements to resume stay (signing
    /// and the header names of either run). The saved order stays too (new endpoints come
    /// after it): a resume adds endpoints in the file's order, which is what gives each its
    /// own records back if the store's slot file was lost (docs/durable.md).
    pub(crate) fn keeping(mut self, old: Option<&Saved>) -> Saved {
        let Some(old) = old else { return self };
        let mut endpoints: Vec<SavedEndpoint> = old
            .endpoints
            .iter()
            .map(|e| {
                let now = self.endpoints.iter().find(|n| n.name == e.name);
                now.unwrap_or(e).clone()
            })
            .collect();
        for e in &self.endpoints {
            if !endpoints.iter().any(|n| n.name == e.name) {
                endpoints.push(e.clone());
            }
        }
        self.endpoints = endpoints;
        self.signed |= old.signed;
        for h in &old.headers {
            if !self.headers.iter().any(|n| n.eq_ignore_ascii_case(h)) {
                self.headers.push(h.clone());
            }
        }
        self
    }

    /// The names of the saved endpoints that are not in `names`.
    pub(crate) fn others<'a>(&'a self, names: &[String]) -> Vec<&'a str> {
        self.endpoints
            .iter()
            .map(|e| e.name.as_str())
            .filter(|n| !names.iter().any(|m| m == n))
            .collect()
    }

    /// The path of the file in `dir`.
    pub(crate) fn path(dir: &Path) -> PathBuf {
        dir.join(FILE)
    }

    /// Reads `DIR/send.json`; `None` if there is none.
    pub(crate) fn load(dir: &Path) -> Result<Option<Saved>, Error> {
        let path = Self::path(dir);
        let text = match fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(bad_file(&path, e)),
        };
        let saved: Saved = serde_json::from_str(&text).map_err(|e| bad_file(&path, e))?;
        if saved.version != VERSION {
            return Err(bad_file(
                &path,
                format!(
                    "version {} (this hookwire reads version {VERSION})",
                    saved.version
                ),
            ));
        }
        Ok(Some(saved))
    }

    /// Writes `DIR/send.json` atomically: a crash leaves the old file or the new one.
    pub(crate) fn save(&self, dir: &Path) -> Result<(), Error> {
        let path = Self::path(dir);
        let tmp = dir.join(format!("{FILE}.tmp"));
        let mut text = serde_json::to_vec_pretty(self)?;
        text.push(b'\n');
        let write = || -> std::io::Result<()> {
            let mut f = owner_only().open(&tmp)?;
            f.write_all(&text)?;
            f.sync_all()?;
            fs::rename(&tmp, &path)?;
            // The rename is durable once the directory is; failing to sync it is not worth
            // failing the run for (the worst case is the previous file after a power loss).
            if let Ok(d) = fs::File::open(dir) {
                let _ = d.sync_all();
            }
            Ok(())
        };
        write().map_err(|e| {
            let _ = fs::remove_file(&tmp);
            bad_file(&path, e)
        })
    }

    /// The `send` options of a resume: the flags given in `args` win; the rest come from this
    /// file. Fails (naming the flag) when a secret or header value must be given again, or
    /// when the endpoints given cannot be matched to the saved names.
    /// `--name` without `--endpoint` picks the saved endpoints to resume, by name.
    pub(crate) fn merge_into(&self, args: &SendArgs) -> Result<SendArgs, Error> {
        let mut out = args.clone();
        if out.endpoints.is_empty() {
            let picked: Vec<&SavedEndpoint> = if out.names.is_empty() {
                self.endpoints.iter().collect()
            } else {
                out.names
                    .iter()
                    .map(|n| {
                        self.endpoints.iter().find(|e| &e.name == n).ok_or_else(|| {
                            Error::config(
                                "--name",
                                format!(
                                    "no endpoint {n:?} in {FILE} (it has {}): give its \
                                     --endpoint too to add it",
                                    self.endpoints
                                        .iter()
                                        .map(|e| e.name.as_str())
                                        .collect::<Vec<_>>()
                                        .join(", ")
                                ),
                            )
                        })
                    })
                    .collect::<Result<_, _>>()?
            };
            out.endpoints = picked
                .into_iter()
                .map(|e| {
                    e.url.clone().ok_or_else(|| {
                        Error::config(
                            "--endpoint",
                            format!(
                                "the URL of endpoint {:?} held credentials and was not saved: \
                                 give every --endpoint again",
                                e.name
                            ),
                        )
                    })
                })
                .collect::<Result<_, _>>()?;
        }
        if out.names.is_empty() {
            if out.endpoints.len() != self.endpoints.len() {
                return Err(Error::config(
                    "--name",
                    format!(
                        "{} --endpoint given, but {FILE} has {}: name them (--name) so that \
                         each resumes its own backlog",
                        out.endpoints.len(),
                        self.endpoints.len()
                    ),
                ));
            }
            out.names = self.endpoints.iter().map(|e| e.name.clone()).collect();
        }
        if self.signed && out.secrets.is_empty() {
            return Err(Error::config(
                "--secret",
                "the events were sent signed: give the same --secret again (secrets are not \
                 saved in the data directory)",
            ));
        }
        if !self.headers.is_empty() && out.headers.is_empty() {
            return Err(Error::config(
                "--header",
                format!(
                    "the events were sent with headers {}: give them again (header values \
                     are not saved in the data directory)",
                    self.headers.join(", ")
                ),
            ));
        }
        out.batch = out.batch.or(self.batch);
        out.linger = out.linger.or(self.linger);
        out.request_timeout = out.request_timeout.or(self.request_timeout);
        out.connect_timeout = out.connect_timeout.or(self.connect_timeout);
        out.capacity = out.capacity.or(self.capacity);
        out.max_attempts = out.max_attempts.or(self.max_attempts);
        out.max_age = out.max_age.or(self.max_age);
        out.max_in_flight = out.max_in_flight.or(self.max_in_flight);
        if out.media_type.is_none()
            && let Some(m) = &self.media_type
        {
            out.media_type = Some(m.parse::<MediaType>().map_err(|e| bad_file_in(&e))?);
        }
        Ok(out)
    }
}

/// Options to create a file only its owner can read (it names the endpoints).
fn owner_only() -> fs::OpenOptions {
    let mut o = fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o
}

/// An error about the saved settings file, for `--data-dir`.
fn bad_file(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::config("--data-dir", format!("{}: {e}", path.display()))
}

/// An error in a saved value.
fn bad_file_in(e: &Error) -> Error {
    Error::config("--data-dir", format!("{FILE}: {e}"))
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

    fn args(argv: &[&str]) -> SendArgs {
        let mut all = vec!["hookwire"];
        all.extend_from_slice(argv);
        T::try_parse_from(all).unwrap().send
    }

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "hookwire-saved-{name}-{}-{:?}",
            std::process::id(),
            std::time::SystemTime::now()
        ));
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn saves_no_secret_and_round_trips() {
        let a = args(&[
            "--endpoint",
            "http://127.0.0.1:9/a",
            "--endpoint",
            "https://u:pw@h.example/b",
            "--secret",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "--header",
            "Authorization: Bearer t0ken",
            "--batch",
            "50",
            "--media-type",
            "v1",
            "--data-dir",
            "/x",
        ]);
        let saved = Saved::new(&a, &["one".into(), "two".into()]);
        let dir = temp_dir("round");
        saved.save(&dir).unwrap();
        let text = fs::read_to_string(Saved::path(&dir)).unwrap();
        for secret in ["whsec_", "t0ken", "pw@"] {
            assert!(!text.contains(secret), "{secret} on disk: {text}");
        }
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(Saved::path(&dir))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let back = Saved::load(&dir).unwrap().unwrap();
        assert_eq!(back, saved);
        assert!(back.signed);
        assert_eq!(back.headers, ["Authorization"]);
        assert_eq!(back.endpoints[1].url, None);
        fs::remove_dir_all(&dir).unwrap();
        assert_eq!(Saved::load(&dir).unwrap(), None);
    }

    #[test]
    fn a_resume_takes_what_is_not_given_and_keeps_the_names() {
        let first = args(&[
            "--endpoint",
            "http://127.0.0.1:9/a",
            "--batch",
            "20",
            "--max-attempts",
            "3",
            "--media-type",
            "v1",
            "--data-dir",
            "/x",
        ]);
        let saved = Saved::new(&first, &["127.0.0.1:9".into()]);
        let r = saved
            .merge_into(&args(&["--data-dir", "/x", "--resume", "--batch", "5"]))
            .unwrap();
        assert_eq!(r.endpoints, ["http://127.0.0.1:9/a"]);
        assert_eq!(r.names, ["127.0.0.1:9"]);
        assert_eq!((r.batch, r.max_attempts), (Some(5), Some(3)));
        assert_eq!(r.media_type, Some(MediaType::V1));
        // A new URL keeps the saved name, so the endpoint resumes its own cursor.
        let r = saved
            .merge_into(&args(&[
                "--data-dir",
                "/x",
                "--resume",
                "--endpoint",
                "http://127.0.0.1:7/new",
            ]))
            .unwrap();
        assert_eq!(r.endpoints, ["http://127.0.0.1:7/new"]);
        assert_eq!(r.names, ["127.0.0.1:9"]);
        // Two URLs for one saved endpoint: which is which must be said.
        let e = saved
            .merge_into(&args(&[
                "--data-dir",
                "/x",
                "--resume",
                "--endpoint",
                "http://a:1/",
                "--endpoint",
                "http://b:1/",
            ]))
            .unwrap_err();
        assert!(e.to_string().contains("--name"), "{e}");
    }

    /// Issue 10, item 7: `--resume --name X` resumes X alone, and the file it saves keeps the
    /// other endpoints (URL, and what a resume of them needs).
    #[test]
    fn a_resume_by_name_picks_it_and_keeps_the_others_saved() {
        let first = args(&[
            "--endpoint",
            "http://127.0.0.1:9/a",
            "--endpoint",
            "http://127.0.0.1:9/b",
            "--secret",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "--header",
            "X-Token: abc",
        ]);
        let saved = Saved::new(&first, &["a".into(), "b".into()]);
        let resume = |extra: &[&str]| {
            let mut argv = vec![
                "--data-dir",
                "/x",
                "--resume",
                "--secret",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
                "--header",
                "X-Token: abc",
            ];
            argv.extend_from_slice(extra);
            saved.merge_into(&args(&argv))
        };
        let r = resume(&["--name", "b"]).unwrap();
        assert_eq!(
            (r.endpoints.as_slice(), r.names.as_slice()),
            (
                &["http://127.0.0.1:9/b".to_owned()][..],
                &["b".to_owned()][..]
            )
        );
        let e = resume(&["--name", "c"]).unwrap_err();
        assert!(
            e.to_string().contains("--name") && e.to_string().contains("a, b"),
            "{e}"
        );
        // What the resume of b (at a new URL) saves: b with this run's settings, a kept as it
        // was, in the saved order; a new endpoint comes after them.
        let plain = args(&["--endpoint", "http://127.0.0.1:7/b", "--batch", "7"]);
        let next = Saved::new(&plain, &["b".into()]).keeping(Some(&saved));
        let names: Vec<&str> = next.endpoints.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        let urls: Vec<_> = next.endpoints.iter().map(|e| e.url.as_deref()).collect();
        assert_eq!(
            urls,
            [Some("http://127.0.0.1:9/a"), Some("http://127.0.0.1:7/b")]
        );
        let new = Saved::new(&plain, &["c".into()]).keeping(Some(&saved));
        let names: Vec<&str> = new.endpoints.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert!(next.signed, "a still needs its secret");
        assert_eq!(next.headers, ["X-Token"]);
        assert_eq!(next.batch, Some(7));
        assert_eq!(next.others(&["b".into()]), ["a"]);
        assert_eq!(
            Saved::new(&plain, &["b".into()])
                .keeping(None)
                .endpoints
                .len(),
            1
        );
    }

    #[test]
    fn a_resume_refuses_without_secrets_headers_or_saved_urls() {
        let first = args(&[
            "--endpoint",
            "https://u:pw@h.example/b",
            "--secret",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            "--header",
            "X-Token: abc",
        ]);
        let saved = Saved::new(&first, &["h".into()]);
        let resume = |extra: &[&str]| {
            let mut argv = vec!["--data-dir", "/x", "--resume"];
            argv.extend_from_slice(extra);
            saved.merge_into(&args(&argv))
        };
        let e = resume(&[]).unwrap_err();
        assert!(e.to_string().contains("--endpoint"), "{e}");
        let url = ["--endpoint", "https://u:pw@h.example/b"];
        let e = resume(&url).unwrap_err();
        assert!(e.to_string().contains("--secret"), "{e}");
        let signed = [
            url[0],
            url[1],
            "--secret",
            "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        ];
        let e = resume(&signed).unwrap_err();
        assert!(e.to_string().contains("X-Token"), "{e}");
        let mut all = signed.to_vec();
        all.extend(["--header", "X-Token: abc"]);
        assert!(resume(&all).is_ok());
    }

    #[test]
    fn a_bad_or_newer_file_is_a_clear_error() {
        let dir = temp_dir("bad");
        fs::write(Saved::path(&dir), "{not json").unwrap();
        let e = Saved::load(&dir).unwrap_err();
        assert!(e.to_string().contains("send.json"), "{e}");
        let mut saved = Saved::new(&args(&["--endpoint", "http://h:1/"]), &["h".into()]);
        saved.version = 9;
        fs::write(Saved::path(&dir), serde_json::to_string(&saved).unwrap()).unwrap();
        let e = Saved::load(&dir).unwrap_err();
        assert!(e.to_string().contains("version 9"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }
}
