//! Outbound HTTP (the npm registry, the update check): one reqwest configuration on rustls with
//! the ring provider (never aws-lc-rs), verifying with the system's roots (or Mozilla's bundled
//! roots where the system has none), honouring HTTPS_PROXY/HTTP_PROXY/ALL_PROXY and NO_PROXY.

use std::sync::Arc;
use std::time::Duration;

use tokio_rustls::rustls;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A client builder with our TLS and User-Agent; callers add their own timeouts.
pub fn builder() -> Result<reqwest::ClientBuilder, BoxError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier: Arc<dyn rustls::client::danger::ServerCertVerifier> =
        match rustls_platform_verifier::Verifier::new(provider.clone()) {
            Ok(v) => Arc::new(v),
            Err(e) => {
                tracing::debug!("No system CA certificates ({e}); using the bundled Mozilla roots");
                let mut roots = rustls::RootCertStore::empty();
                roots.add_parsable_certificates(webpki_root_certs::TLS_SERVER_ROOT_CERTS.iter().cloned());
                rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                    .build()?
            }
        };
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    // reqwest is built without HTTP/2; say so in the handshake.
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .user_agent(concat!("code-server/", env!("CARGO_PKG_VERSION"))))
}

/// For downloads: bounded connect and read times (a stalled registry must not hang
/// provisioning forever) but no overall deadline (a large tarball on a slow link is fine).
pub fn download_client() -> Result<reqwest::Client, BoxError> {
    Ok(builder()?.connect_timeout(Duration::from_secs(30)).read_timeout(Duration::from_secs(60)).build()?)
}

/// `reqwest`'s own message is only the outermost layer ("error sending request"); the cause is
/// what a user needs (connection refused, certificate, proxy).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
        source = s.source();
    }
    msg
}
