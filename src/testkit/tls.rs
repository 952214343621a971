//! The receiver's optional TLS: a rustls server configuration from PEM, and the stream type
//! a connection thread reads and writes (plain TCP, or rustls over blocking TCP).
//!
//! The handshake happens on the connection's thread, on its first read, so a client that
//! rejects the certificate only costs that thread (the read fails and the connection ends).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection, StreamOwned};

/// Builds a server configuration from a PEM certificate chain (leaf first) and a PEM private
/// key. Anything unparsable is `InvalidInput`.
pub(super) fn server_config(chain_pem: &str, key_pem: &str) -> io::Result<Arc<ServerConfig>> {
    let bad = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad(format!("TLS certificate chain is not valid PEM: {e}")))?;
    if chain.is_empty() {
        return Err(bad("TLS certificate chain holds no certificate".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| bad(format!("TLS private key is not valid PEM: {e}")))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad(format!("TLS provider: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| bad(format!("TLS certificate or key refused: {e}")))?;
    Ok(Arc::new(config))
}

/// A receiver connection's byte stream.
pub(super) enum Stream {
    /// Plain HTTP.
    Plain(TcpStream),
    /// HTTPS: rustls over the blocking socket.
    Tls(Box<StreamOwned<ServerConnection, TcpStream>>),
}

impl Stream {
    /// Wraps `tcp` in TLS when `config` is set.
    pub(super) fn new(tcp: TcpStream, config: Option<&Arc<ServerConfig>>) -> io::Result<Self> {
        Ok(match config {
            None => Stream::Plain(tcp),
            Some(config) => {
                let conn = ServerConnection::new(config.clone())
                    .map_err(|e| io::Error::other(format!("TLS: {e}")))?;
                Stream::Tls(Box::new(StreamOwned::new(conn, tcp)))
            }
        })
    }

    /// The TCP socket underneath.
    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(s) => s.get_ref(),
        }
    }

    /// Ends TLS politely (`close_notify`) before the socket closes; nothing for plain TCP.
    pub(super) fn close_notify(&mut self) {
        if let Stream::Tls(s) = self {
            s.conn.send_close_notify();
            let _ = s.flush();
        }
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}
