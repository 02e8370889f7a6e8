//! Outbound HTTP (the npm registry, later the update check): one reqwest client configuration,
//! on rustls with the ring provider (never aws-lc-rs), honouring HTTPS_PROXY/HTTP_PROXY/NO_PROXY.

use std::time::Duration;

/// Makes ring the process-wide rustls provider. reqwest (built without a provider) and the
/// platform certificate verifier look it up; calling this more than once is harmless.
pub fn install_crypto_provider() {
    let _ = tokio_rustls::rustls::crypto::ring::default_provider().install_default();
}

/// A client with code-server's User-Agent and bounded connect and read times (a stalled
/// registry must not hang provisioning forever).
pub fn client() -> reqwest::Result<reqwest::Client> {
    install_crypto_provider();
    reqwest::Client::builder()
        .user_agent(concat!("code-server/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30))
        .read_timeout(Duration::from_secs(60))
        .build()
}
