//! A real docker registry (Debian's `docker-registry`, distribution 2.8.2) for the tests that
//! check hookwire against what a registry really sends: started on a free loopback port with
//! its notifications pointed at a URL, and driven through its HTTP API (blob uploads, a
//! schema-2 manifest, a delete), as `docker push` and `crane delete` would.
//!
//! Without the package the tests that need it print why and return, unless
//! `HOOKWIRE_REQUIRE_REGISTRY=1` (set by `.ci/run`, which installs it) makes that a failure.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::TempDir;

/// The registry binary Debian installs.
const BINARY: &str = "/usr/bin/docker-registry";

/// A running registry; killed when dropped.
pub struct Registry {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    _dir: TempDir,
}

/// What a push left in the registry.
pub struct Pushed {
    /// The manifest's digest (`sha256:...`).
    pub manifest: String,
    /// The config and layer blobs' digests.
    pub blobs: Vec<String>,
}

/// Whether the registry can be run here; prints why not (or fails, when CI requires it).
pub fn available() -> bool {
    if std::path::Path::new(BINARY).exists() {
        return true;
    }
    let why = format!(
        "{BINARY} is missing: install Debian's docker-registry (.ci/run does) to run this test"
    );
    assert!(
        std::env::var_os("HOOKWIRE_REQUIRE_REGISTRY").is_none(),
        "{why}"
    );
    eprintln!("SKIPPED: {why}");
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sha256(data: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(data);
    let hex: String = d.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

impl Registry {
    /// Starts a registry whose notifications go to `notify_url` (one endpoint named
    /// `hookwire`, with distribution's retry settings shortened for tests). Waits until it
    /// answers `GET /v2/`.
    pub fn start(notify_url: &str) -> Registry {
        let dir = TempDir::new("registry");
        std::fs::create_dir_all(dir.path()).unwrap();
        let port = free_port();
        let config = format!(
            "version: 0.1\n\
             log:\n  level: warn\n\
             storage:\n  filesystem:\n    rootdirectory: '{root}'\n  delete:\n    enabled: true\n\
             http:\n  addr: 127.0.0.1:{port}\n\
             notifications:\n  endpoints:\n    - name: hookwire\n      url: {notify_url}\n      \
             timeout: 2s\n      threshold: 3\n      backoff: 200ms\n",
            root = dir.path().join("data").display(),
        );
        let config_path = dir.path().join("config.yml");
        std::fs::write(&config_path, config).unwrap();
        let child = Command::new(BINARY)
            .arg("serve")
            .arg(&config_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let registry = Registry {
            child,
            url: format!("http://127.0.0.1:{port}"),
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while ureq::get(format!("{}/v2/", registry.url)).call().is_err() {
            assert!(Instant::now() < deadline, "the registry did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        registry
    }

    /// Uploads one blob to `repo` (monolithic upload: POST, then PUT with the digest).
    fn blob(&self, repo: &str, data: &[u8]) -> String {
        let digest = sha256(data);
        let started = ureq::post(format!("{}/v2/{repo}/blobs/uploads/", self.url))
            .send_empty()
            .expect("start a blob upload");
        let location = started
            .headers()
            .get("Location")
            .and_then(|v| v.to_str().ok())
            .expect("an upload location")
            .to_owned();
        let location = if location.starts_with('/') {
            format!("{}{location}", self.url)
        } else {
            location
        };
        let sep = if location.contains('?') { '&' } else { '?' };
        let done = ureq::put(format!("{location}{sep}digest={digest}"))
            .header("Content-Type", "application/octet-stream")
            .send(data)
            .expect("finish a blob upload");
        assert_eq!(done.status(), 201);
        digest
    }

    /// Pushes an image `repo:tag` (a config blob, one layer, a schema-2 manifest): the
    /// registry notifies a `push` for each blob and one for the manifest.
    pub fn push(&self, repo: &str, tag: &str) -> Pushed {
        let config = format!(
            r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}},"tag":"{tag}"}}"#
        );
        let layer = format!("layer of {repo}:{tag}");
        let config_digest = self.blob(repo, config.as_bytes());
        let layer_digest = self.blob(repo, layer.as_bytes());
        let manifest = format!(
            r#"{{"schemaVersion":2,"mediaType":"application/vnd.docker.distribution.manifest.v2+json","config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":{},"digest":"{config_digest}"}},"layers":[{{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","size":{},"digest":"{layer_digest}"}}]}}"#,
            config.len(),
            layer.len()
        );
        let put = ureq::put(format!("{}/v2/{repo}/manifests/{tag}", self.url))
            .header(
                "Content-Type",
                "application/vnd.docker.distribution.manifest.v2+json",
            )
            .send(manifest.as_bytes())
            .expect("put the manifest");
        assert_eq!(put.status(), 201);
        let digest = put
            .headers()
            .get("Docker-Content-Digest")
            .and_then(|v| v.to_str().ok())
            .expect("the manifest digest")
            .to_owned();
        Pushed {
            manifest: digest,
            blobs: vec![config_digest, layer_digest],
        }
    }

    /// Deletes a manifest by digest: the registry notifies a `delete`.
    pub fn delete(&self, repo: &str, digest: &str) {
        let r = ureq::delete(format!("{}/v2/{repo}/manifests/{digest}", self.url))
            .call()
            .expect("delete the manifest");
        assert_eq!(r.status(), 202);
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
