//! Accepting connections: limits, TLS, authentication, shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use futures::Sink;
use pgwire::api::auth::noop::NoopStartupHandler;
use pgwire::api::auth::sasl::SASLAuthStartupHandler;
use pgwire::api::auth::{DefaultServerParameterProvider, StartupHandler};
use pgwire::api::cancel::CancelHandler;
use pgwire::api::copy::CopyHandler;
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tessera::Database;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::cancel::{Cancels, Registration};
use crate::handler::Handler;

#[derive(Clone, Debug)]
pub struct ServerOptions {
    pub listen: String,
    pub max_connections: usize,
    /// PEM certificate chain and private key: offer TLS.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// Refuse connections that did not negotiate TLS.
    pub require_tls: bool,
    /// Close a connection that sends nothing for this long (`None`: never).
    pub idle_timeout: Option<std::time::Duration>,
}

/// A connection that sends nothing for an hour is closed (57P05), so
/// abandoned clients do not hold a connection slot for ever.
pub const DEFAULT_IDLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(3600);

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            listen: "127.0.0.1:5433".into(),
            max_connections: 100,
            tls: None,
            require_tls: false,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
        }
    }
}

/// The rustls acceptor for a PEM certificate chain and key.
fn tls_acceptor(cert: &std::path::Path, key: &std::path::Path) -> anyhow::Result<pgwire::tokio::TlsAcceptor> {
    use anyhow::Context;
    use pgwire::tokio::tokio_rustls::rustls;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    // Both providers may be compiled in; choose ring explicitly.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert)
        .with_context(|| format!("reading TLS certificate {}", cert.display()))?
        .collect::<Result<_, _>>()
        .with_context(|| format!("parsing TLS certificate {}", cert.display()))?;
    anyhow::ensure!(!certs.is_empty(), "no certificate in {}", cert.display());
    let key = PrivateKeyDer::from_pem_file(key).with_context(|| format!("reading TLS key {}", key.display()))?;
    let mut config = rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("the TLS certificate and key do not fit together")?;
    config.alpn_protocols = vec![b"postgresql".to_vec()];
    Ok(pgwire::tokio::TlsAcceptor::from(Arc::new(config)))
}

/// Loopback connections need no password while no user exists.
struct TrustLoopback;

#[async_trait]
impl NoopStartupHandler for TrustLoopback {
    async fn post_startup<C>(&self, client: &mut C, _message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if !client.socket_addr().ip().is_loopback() {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28000".into(),
                "no users exist yet: only loopback connections are accepted (create a user first)".into(),
            ))));
        }
        Ok(())
    }
}

/// Per connection: SCRAM-SHA-256 once any user exists, otherwise trust for
/// loopback connections. Decided at the connection's first message.
struct Startup {
    db: Database,
    require_tls: bool,
    trust: TrustLoopback,
    sasl: SASLAuthStartupHandler<DefaultServerParameterProvider>,
    use_scram: parking_lot::Mutex<Option<bool>>,
    cancels: Arc<Cancels>,
}

#[async_trait]
impl StartupHandler for Startup {
    async fn on_startup<C>(&self, client: &mut C, message: PgWireFrontendMessage) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: std::fmt::Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        if self.require_tls && !client.is_secure() {
            return Err(PgWireError::UserError(Box::new(ErrorInfo::new(
                "FATAL".into(),
                "28000".into(),
                "this server accepts only TLS connections (connect with sslmode=require)".into(),
            ))));
        }
        let scram = *self.use_scram.lock().get_or_insert_with(|| crate::users::any_user(&self.db));
        if scram {
            self.sasl.on_startup(client, message).await?;
        } else {
            self.trust.on_startup(client, message).await?;
        }
        // Authenticated: the key the client was given can cancel its
        // statements from now on.
        if matches!(client.state(), PgWireConnectionState::ReadyForQuery) && client.session_extensions().get::<Registration>().is_none() {
            let (pid, secret) = client.pid_and_secret_key();
            client.session_extensions().insert(self.cancels.register(pid, &secret));
        }
        Ok(())
    }
}

struct Handlers {
    db: Database,
    require_tls: bool,
    handler: Arc<Handler>,
    cancels: Arc<Cancels>,
}

struct LogErrors;

impl ErrorHandler for LogErrors {
    fn on_error<C: ClientInfo>(&self, client: &C, error: &mut PgWireError) {
        if let PgWireError::IoError(e) = error {
            log(&format!("connection {}: {e}", client.socket_addr()));
        }
    }
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl SimpleQueryHandler> {
        self.handler.clone()
    }
    fn extended_query_handler(&self) -> Arc<impl ExtendedQueryHandler> {
        self.handler.clone()
    }
    fn startup_handler(&self) -> Arc<impl StartupHandler> {
        // Called once per connection: the SASL exchange keeps per-connection state.
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = crate::pgcompat::SERVER_VERSION.to_string();
        let sasl = SASLAuthStartupHandler::new(Arc::new(parameters)).with_scram(crate::users::scram(&self.db));
        Arc::new(Startup {
            db: self.db.clone(),
            require_tls: self.require_tls,
            trust: TrustLoopback,
            sasl,
            use_scram: parking_lot::Mutex::new(None),
            cancels: self.cancels.clone(),
        })
    }
    fn copy_handler(&self) -> Arc<impl CopyHandler> {
        self.handler.clone()
    }
    fn error_handler(&self) -> Arc<impl ErrorHandler> {
        Arc::new(LogErrors)
    }
    fn cancel_handler(&self) -> Arc<impl CancelHandler> {
        self.cancels.clone()
    }
}

pub fn log(message: &str) {
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    eprintln!("[{now}] tessera: {message}");
}

/// Serve until `shutdown` resolves; then stop accepting, let running
/// statements finish their commits, and flush the database.
pub async fn serve(
    db: Database,
    options: ServerOptions,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<SocketAddr> {
    crate::pgcompat::install(&db)?;
    let listener = TcpListener::bind(&options.listen).await?;
    let addr = listener.local_addr()?;
    let auth = if crate::users::any_user(&db) {
        "users authenticate with SCRAM-SHA-256"
    } else {
        "no user exists yet, so loopback connections are trusted for any user name (CREATE USER turns on passwords)"
    };
    let tls = match (&options.tls, options.require_tls) {
        (Some(_), true) => "TLS required",
        (Some(_), false) => "TLS offered",
        (None, _) => "no TLS",
    };
    log(&format!("listening on {addr} (database \"tessera\"); {tls}; {auth}"));
    anyhow::ensure!(!options.require_tls || options.tls.is_some(), "--require-tls needs --tls-cert and --tls-key");
    let acceptor = match &options.tls {
        Some((cert, key)) => Some(tls_acceptor(cert, key)?),
        None => None,
    };
    let handlers = Arc::new(Handlers {
        db: db.clone(),
        require_tls: options.require_tls,
        handler: Arc::new(Handler::new(db.clone())),
        cancels: Arc::new(Cancels::default()),
    });
    let slots = Arc::new(Semaphore::new(options.max_connections));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => {
                let (socket, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => { log(&format!("accept failed: {e}")); continue; }
                };
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    log(&format!("refusing {peer}: {} connections already open", options.max_connections));
                    tokio::spawn(refuse(socket));
                    continue;
                };
                let handlers = handlers.clone();
                let acceptor = acceptor.clone();
                let idle_timeout = options.idle_timeout;
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = crate::connection::process(socket, acceptor, handlers, idle_timeout).await {
                        log(&format!("connection from {peer} ended: {e}"));
                    }
                });
            }
        }
    }
    log("shutting down: finishing commits and flushing");
    db.checkpoint().await?;
    Ok(addr)
}

/// Tell a client over the limit why, in the protocol's words.
async fn refuse(mut socket: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let message = b"SFATAL\0C53300\0Msorry, too many clients already\0\0";
    let mut packet = Vec::with_capacity(message.len() + 5);
    packet.push(b'E');
    packet.extend_from_slice(&((message.len() + 4) as u32).to_be_bytes());
    packet.extend_from_slice(message);
    let _ = socket.write_all(&packet).await;
}

pub fn default_data_dir() -> PathBuf {
    PathBuf::from("./tessera-data")
}
