//! One client connection: TLS negotiation, then pgwire's message loop.
//!
//! pgwire's own `process_socket` does the same with two differences that
//! matter here: it keeps any bytes that arrived in the same packet as an
//! SSLRequest and decodes them as if they had come over TLS (the hole
//! PostgreSQL closed as CVE-2021-23214: a man in the middle could inject
//! plaintext commands into an encrypted session), and it never gives up on
//! a client that stops talking. Here the first ends the connection with
//! SQLSTATE 08P01 and the second with 57P05 after the idle timeout.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use pgwire::api::{ClientInfo, ErrorHandler, PgWireConnectionState, PgWireServerHandlers};
use pgwire::error::ErrorInfo;
use pgwire::messages::response::{GssEncResponse, SslResponse};
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage, SslNegotiationMetaMessage};
use pgwire::tokio::server::{process_error, process_message, MaybeTls, PgWireMessageServerCodec};
use pgwire::tokio::TlsAcceptor;
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, FramedParts};

use crate::corked::Corked;

/// A client has this long from connecting to finishing authentication.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(60);

/// The first byte of a TLS handshake record: a client starting TLS without
/// an SSLRequest (PostgreSQL 17's `sslnegotiation=direct`).
const TLS_HANDSHAKE: u8 = 0x16;

/// The ALPN protocol name a direct-TLS client must offer.
const POSTGRESQL_ALPN: &[u8] = b"postgresql";

type Socket<S> = Framed<Corked<MaybeTls>, PgWireMessageServerCodec<S>>;

/// Serve one client until it leaves, misbehaves or stays idle too long
/// (`idle_timeout` of `None`: never).
pub async fn process<H: PgWireServerHandlers>(
    tcp: TcpStream,
    tls: Option<TlsAcceptor>,
    handlers: Arc<H>,
    idle_timeout: Option<Duration>,
) -> io::Result<()> {
    let startup = tokio::time::sleep(STARTUP_TIMEOUT);
    tokio::pin!(startup);
    let socket = tokio::select! {
        _ = &mut startup => return Ok(()),
        socket = negotiate(tcp, tls) => socket?,
    };
    let Some(mut socket) = socket else { return Ok(()) };
    let startup_handler = handlers.startup_handler();
    let simple = handlers.simple_query_handler();
    let extended = handlers.extended_query_handler();
    let copy = handlers.copy_handler();
    let cancel = handlers.cancel_handler();
    let errors = handlers.error_handler();
    loop {
        let starting =
            matches!(socket.state(), PgWireConnectionState::AwaitingStartup | PgWireConnectionState::AuthenticationInProgress);
        let message = if starting {
            tokio::select! {
                _ = &mut startup => return Ok(()),
                m = socket.next() => m,
            }
        } else {
            match idle_timeout {
                None => socket.next().await,
                Some(limit) => match tokio::time::timeout(limit, socket.next()).await {
                    Ok(m) => m,
                    Err(_) => return say_fatal(&mut socket, "57P05", "terminating connection due to idle-session timeout").await,
                },
            }
        };
        let message = match message {
            Some(Ok(m)) => m,
            // A message that does not decode: pgwire's loop ends the
            // connection here too; say why first.
            Some(Err(e)) => return say_fatal(&mut socket, "08P01", &format!("invalid message: {e}")).await,
            None => return Ok(()),
        };
        if matches!(message, PgWireFrontendMessage::Terminate(_)) {
            return Ok(());
        }
        // Replies to the messages of an extended-protocol batch wait for
        // the Sync (or Flush) that ends it, as PostgreSQL's do. Anything
        // else goes out as it is sent: a simple query may be a live COPY
        // stream (SUBSCRIBE TO SEGMENT) that must not wait in a buffer.
        let batched = matches!(
            message,
            PgWireFrontendMessage::Parse(_)
                | PgWireFrontendMessage::Bind(_)
                | PgWireFrontendMessage::Describe(_)
                | PgWireFrontendMessage::Execute(_)
                | PgWireFrontendMessage::Close(_)
        );
        socket.get_mut().hold(batched);
        let extended_flow = match socket.state() {
            PgWireConnectionState::CopyInProgress(extended) => extended,
            _ => message.is_extended_query(),
        };
        let outcome = process_message(
            message,
            &mut socket,
            startup_handler.clone(),
            simple.clone(),
            extended.clone(),
            copy.clone(),
            cancel.clone(),
        )
        .await;
        if let Err(mut e) = outcome {
            errors.on_error(&socket, &mut e);
            process_error(&mut socket, e, extended_flow).await?;
        }
        if !batched {
            socket.flush().await?;
        }
    }
}

/// Send a FATAL error and close.
async fn say_fatal<S>(socket: &mut Socket<S>, code: &str, message: &str) -> io::Result<()> {
    let info = ErrorInfo::new("FATAL".into(), code.into(), message.into());
    socket.get_mut().hold(false);
    let _ = socket.send(PgWireBackendMessage::ErrorResponse(info.into())).await;
    socket.close().await
}

/// SSLRequest / GSSENCRequest handling, then the socket ready for the
/// startup message: over TLS when the client asked and TLS is configured.
/// `None`: the connection is to be dropped.
async fn negotiate<S>(tcp: TcpStream, tls: Option<TlsAcceptor>) -> io::Result<Option<Socket<S>>> {
    let addr = tcp.peer_addr()?;
    tcp.set_nodelay(true)?;
    let mut first = [0u8; 1];
    let direct = tcp.peek(&mut first).await? == 1 && first[0] == TLS_HANDSHAKE;
    let mut plain = Framed::new(tcp, PgWireMessageServerCodec::<S>::new(pgwire::api::DefaultClient::new(addr, false)));
    let wants_tls = direct || ask_for_tls(&mut plain, tls.is_some()).await?;
    if !wants_tls {
        return Ok(Some(plaintext(plain, addr)));
    }
    let Some(acceptor) = tls else { return Ok(None) };
    if !plain.read_buffer().is_empty() {
        // Sent before the handshake, so not protected by it: refuse.
        let info = ErrorInfo::new(
            "FATAL".into(),
            "08P01".into(),
            "received unencrypted data after SSL request".into(),
        );
        let _ = plain.send(PgWireBackendMessage::ErrorResponse(info.into())).await;
        crate::server::log(&format!("refusing {addr}: unencrypted data arrived after its SSL request"));
        return Ok(None);
    }
    let parts = plain.into_parts();
    let stream = acceptor.accept(parts.io).await?;
    if direct && stream.get_ref().1.alpn_protocol() != Some(POSTGRESQL_ALPN) {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "direct TLS connection without the postgresql ALPN protocol"));
    }
    let mut client = pgwire::api::DefaultClient::new(addr, true);
    client.sni_server_name = stream.get_ref().1.server_name().map(str::to_string);
    let mut socket = Framed::from_parts(FramedParts::new(Corked::new(MaybeTls::Tls(Box::new(stream))), PgWireMessageServerCodec::new(client)));
    socket.set_state(PgWireConnectionState::AwaitingStartup);
    Ok(Some(socket))
}

/// Answer the SSLRequest and GSSENCRequest a client may send before its
/// startup message; true when it asked for TLS and got `S`.
async fn ask_for_tls<S>(plain: &mut Framed<TcpStream, PgWireMessageServerCodec<S>>, tls_offered: bool) -> io::Result<bool> {
    let (mut ssl_answered, mut gss_answered) = (false, false);
    loop {
        match plain.next().await {
            Some(Ok(PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::PostgresSsl(_)))) if !ssl_answered => {
                if tls_offered {
                    plain.send(PgWireBackendMessage::SslResponse(SslResponse::Accept)).await?;
                    return Ok(true);
                }
                plain.send(PgWireBackendMessage::SslResponse(SslResponse::Refuse)).await?;
                ssl_answered = true;
            }
            Some(Ok(PgWireFrontendMessage::SslNegotiation(SslNegotiationMetaMessage::PostgresGss(_)))) if !gss_answered => {
                plain.send(PgWireBackendMessage::GssEncResponse(GssEncResponse::Refuse)).await?;
                gss_answered = true;
            }
            _ => return Ok(false),
        }
        if ssl_answered && gss_answered {
            return Ok(false);
        }
    }
}

/// The plaintext socket, keeping what it has read so far.
fn plaintext<S>(plain: Framed<TcpStream, PgWireMessageServerCodec<S>>, addr: std::net::SocketAddr) -> Socket<S> {
    let old = plain.into_parts();
    let mut parts = FramedParts::new(Corked::new(MaybeTls::Plain(old.io)), PgWireMessageServerCodec::new(pgwire::api::DefaultClient::new(addr, false)));
    parts.read_buf = old.read_buf;
    parts.write_buf = old.write_buf;
    let mut socket = Framed::from_parts(parts);
    socket.set_state(PgWireConnectionState::AwaitingStartup);
    socket
}
