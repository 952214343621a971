//! `hookwire send --resume`'s saved settings, `DIR/send.json` (src/bin/hookwire/saved.rs),
//! read back and turned into endpoint settings. The CLI's modules are included by path, so
//! `crate::saved`, `crate::send` and `crate::options` are the binary's own code.
//!
//! Input: the file's bytes.
//! Invariants: never panics; a file that cannot be used is an `Error::Config` naming
//! `--data-dir`; one that loads saves and loads back equal; a resume from it (with and
//! without secrets and headers given again) either refuses with an `Error::Config` or gives
//! settings that the CLI's and the library's checks judge without panicking.

use std::fs;

use clap::Parser;
use hookwire::Error;

use crate::options::endpoint_configs;
use crate::saved::Saved;
use crate::scratch::Scratch;
use crate::send::SendArgs;

#[derive(Parser)]
struct Argv {
    #[command(flatten)]
    send: SendArgs,
}

pub fn check(data: &[u8]) {
    let scratch = Scratch::new();
    let dir = scratch.path();
    fs::write(Saved::path(dir), data).unwrap();
    let saved = match Saved::load(dir) {
        Ok(Some(saved)) => saved,
        Ok(None) => panic!("the file is there"),
        Err(e) => {
            assert!(
                matches!(
                    e,
                    Error::Config {
                        field: "--data-dir",
                        ..
                    }
                ),
                "{e:?}"
            );
            return;
        }
    };
    let copy = dir.join("copy");
    fs::create_dir(&copy).unwrap();
    saved.save(&copy).expect("save");
    assert_eq!(Saved::load(&copy).expect("load").as_ref(), Some(&saved));

    let d = dir.to_str().expect("a UTF-8 temp path");
    let bare: &[&str] = &["hookwire", "--data-dir", d, "--resume"];
    let given: &[&str] = &[
        "hookwire",
        "--data-dir",
        d,
        "--resume",
        "--secret",
        "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "--header",
        "X-Fuzz: 1",
    ];
    for argv in [bare, given] {
        let args = Argv::try_parse_from(argv).expect("valid flags").send;
        let merged = match saved.merge_into(&args) {
            Ok(merged) => merged,
            Err(e) => {
                assert!(matches!(e, Error::Config { .. }), "{e:?}");
                continue;
            }
        };
        assert_eq!(merged.names.len(), saved.endpoints.len());
        match endpoint_configs(&merged) {
            Ok(configs) => {
                assert_eq!(configs.len(), merged.endpoints.len());
                for c in &configs {
                    if let Err(e) = hookwire::fuzzing::validate_endpoint_config(c) {
                        assert!(matches!(e, Error::Config { .. }), "{e:?}");
                    }
                }
            }
            Err(e) => assert!(matches!(e, Error::Config { .. }), "{e:?}"),
        }
    }
}
