//! SMTP: lettre's SMTP sessions over a pool of connections this file opens (with
//! TCP_NODELAY, see [`Pool`]), plain, STARTTLS or implicit TLS (rustls with ring, in every
//! build). The server's certificate is checked against the system's roots, or only against
//! the CA in `mail.smtp_ca_file` when one is configured (a private relay).

use super::{Outgoing, SendError, Timeouts};
use lettre::address::Envelope;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::client::{
    AsyncSmtpConnection, Certificate, CertificateStore, TlsParameters,
};
use lettre::transport::smtp::extension::ClientId;
use lettre::Message;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// A pooled connection idle longer than this is asked NOOP before it carries a mail (a
/// server may have closed it); fresher ones are used as they are, saving a round trip.
const CHECK_AFTER_IDLE: Duration = Duration::from_secs(2);
/// A pooled connection idle longer than this is closed rather than reused (lettre's own
/// pool default; servers drop idle clients after a few minutes).
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// How to reach the SMTP server.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// Server host.
    pub host: String,
    /// Server port.
    pub port: u16,
    /// `none`, `starttls` or `tls`.
    pub tls: String,
    /// PEM file of the CA(s) the server's certificate must chain to; empty for the system's
    /// roots. A private relay's own CA, trusted for this transport only.
    pub ca_file: String,
    /// Connections open at once (a send waits for one when all are busy).
    pub pool_max: u32,
    /// Connect and total timeouts.
    pub timeouts: Timeouts,
}

/// How each connection is secured.
#[derive(Clone)]
enum Security {
    /// Plain SMTP.
    Plain,
    /// Plain connect, then STARTTLS (required: a server without it is refused).
    StartTls(TlsParameters),
    /// TLS from the first byte.
    Implicit(TlsParameters),
}

/// A connection waiting in the pool, with when it was last used.
struct Idle {
    /// lettre's SMTP session (EHLO done, TLS set up).
    conn: AsyncSmtpConnection,
    /// When it was parked.
    since: Instant,
}

/// The connections to one server. lettre's own pool (`AsyncSmtpTransport`) opens sockets
/// without TCP_NODELAY, and lettre writes a mail's body and its final `.` in two writes:
/// Nagle's algorithm holds the `.` until the server ACKs the body, which a server waiting
/// for that `.` delays (40 ms on Linux), so each connection carried about 23 mails/s
/// whatever the server (BENCHMARKS.md, issue 18). Here every socket is opened by us with
/// TCP_NODELAY and handed to lettre's SMTP session; lettre still speaks the protocol.
struct Pool {
    /// Server host (also the name its TLS certificate must carry).
    host: String,
    /// Server port.
    port: u16,
    /// Plain, STARTTLS or implicit TLS.
    security: Security,
    /// Longest wait for a connection (TCP, TLS and the greeting and EHLO).
    connect_timeout: Duration,
    /// Parked connections, the most recently used last (reused first: warmest).
    idle: Mutex<Vec<Idle>>,
    /// One permit per open connection: at most `pool_max` at once.
    open: Semaphore,
}

impl Pool {
    /// A ready connection: a parked one that still answers, else a new one.
    async fn take(&self) -> Result<AsyncSmtpConnection, SendError> {
        loop {
            let parked = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
            let Some(Idle { mut conn, since }) = parked else {
                return self.connect().await;
            };
            let idle = since.elapsed();
            if idle > IDLE_TIMEOUT {
                conn.abort().await;
                continue;
            }
            if idle <= CHECK_AFTER_IDLE || conn.test_connected().await {
                return Ok(conn);
            }
            conn.abort().await;
        }
    }

    /// Parks a connection that ended its mail cleanly; closes one that did not.
    async fn give_back(&self, mut conn: AsyncSmtpConnection, clean: bool) {
        if clean && !conn.has_broken() {
            let idle = Idle {
                conn,
                since: Instant::now(),
            };
            self.idle
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .push(idle);
        } else {
            conn.abort().await;
        }
    }

    /// Opens a connection within the connect timeout.
    async fn connect(&self) -> Result<AsyncSmtpConnection, SendError> {
        match tokio::time::timeout(self.connect_timeout, self.open_session()).await {
            Ok(outcome) => outcome,
            Err(_) => Err(SendError::transient(format!(
                "smtp: no session with {}:{} within {} ms",
                self.host,
                self.port,
                self.connect_timeout.as_millis()
            ))),
        }
    }

    async fn open_session(&self) -> Result<AsyncSmtpConnection, SendError> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| {
                SendError::transient(format!("smtp: connect to {}:{}: {e}", self.host, self.port))
            })?;
        // Without it each mail waits for the server's delayed ACK (see `Pool`).
        tcp.set_nodelay(true)
            .map_err(|e| SendError::transient(format!("smtp: TCP_NODELAY: {e}")))?;
        let hello = ClientId::default();
        match &self.security {
            Security::Plain => AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello)
                .await
                .map_err(classify),
            Security::StartTls(params) => {
                let mut conn = AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &hello)
                    .await
                    .map_err(classify)?;
                conn.starttls(params.clone(), &hello)
                    .await
                    .map_err(classify)?;
                Ok(conn)
            }
            Security::Implicit(params) => {
                let stream = implicit::TlsStream::handshake(tcp, params.clone())
                    .await
                    .map_err(classify)?;
                AsyncSmtpConnection::connect_with_transport(Box::new(stream), &hello)
                    .await
                    .map_err(classify)
            }
        }
    }
}

/// lettre's error as a send outcome: 5xx answers are permanent, everything else (4xx,
/// refused, TLS, broken connections) is worth a retry.
fn classify(e: lettre::transport::smtp::Error) -> SendError {
    if e.is_permanent() {
        SendError::permanent(format!("smtp: {e}"))
    } else {
        SendError::transient(format!("smtp: {e}"))
    }
}

/// A pooled SMTP transport; cheap to clone (the pool is shared).
#[derive(Clone)]
pub struct SmtpSender {
    /// The connections.
    pool: Arc<Pool>,
    /// The whole-send limit.
    total: Duration,
}

impl SmtpSender {
    /// Builds the transport; no connection is made until the first send. The CA file, if
    /// any, is read here, once.
    pub fn new(settings: &SmtpSettings) -> Result<SmtpSender, String> {
        let tls = || tls_parameters(&settings.host, &settings.ca_file);
        let security = match settings.tls.as_str() {
            "none" => Security::Plain,
            "starttls" => Security::StartTls(tls()?),
            "tls" => Security::Implicit(tls()?),
            other => return Err(format!("smtp tls mode `{other}` is not known")),
        };
        let pool = Pool {
            host: settings.host.clone(),
            port: settings.port,
            security,
            connect_timeout: settings.timeouts.connect,
            idle: Mutex::new(Vec::new()),
            open: Semaphore::new(settings.pool_max.max(1) as usize),
        };
        Ok(SmtpSender {
            pool: Arc::new(pool),
            total: settings.timeouts.total,
        })
    }

    /// The whole-send limit.
    pub fn total_timeout(&self) -> Duration {
        self.total
    }

    /// Sends one mail over a pooled connection. 5xx answers are permanent, everything else
    /// (4xx, refused, timeouts, broken connections) is worth a retry.
    pub async fn send(&self, mail: Outgoing<'_>) -> Result<(), SendError> {
        let message = build(mail)?;
        let (envelope, bytes): (&Envelope, Vec<u8>) = (message.envelope(), message.formatted());
        let _open = self
            .pool
            .open
            .acquire()
            .await
            .map_err(|_| SendError::transient("smtp: the transport is shutting down"))?;
        let mut conn = self.pool.take().await?;
        let outcome = conn.send(envelope, &bytes).await;
        self.pool.give_back(conn, outcome.is_ok()).await;
        outcome.map(|_| ()).map_err(classify)
    }
}

/// What a TLS session to `host` trusts: the system's roots, or with `ca_file` only the CAs
/// in that file (so a public CA cannot vouch for a private relay's name). The name the
/// certificate must carry is `host` (a DNS name or an IP address).
pub fn tls_parameters(host: &str, ca_file: &str) -> Result<TlsParameters, String> {
    let builder = TlsParameters::builder(host.to_owned());
    let builder = if ca_file.is_empty() {
        builder
    } else {
        builder
            .certificate_store(CertificateStore::None)
            .add_root_certificate(load_ca_file(Path::new(ca_file))?)
    };
    builder
        .build_rustls()
        .map_err(|e| format!("smtp tls to `{host}`: {e}"))
}

/// Reads a PEM file of one or more CA certificates. The error says what is wrong with the
/// file (unreadable, no certificate, bad PEM, or a certificate rustls cannot trust).
pub fn load_ca_file(path: &Path) -> Result<Certificate, String> {
    let shown = path.display();
    let pem = std::fs::read(path).map_err(|e| format!("`{shown}` cannot be read: {e}"))?;
    let marker: &[u8] = b"-----BEGIN CERTIFICATE-----";
    let count = pem.windows(marker.len()).filter(|w| *w == marker).count();
    if count == 0 {
        return Err(format!(
            "`{shown}` holds no PEM certificate (-----BEGIN CERTIFICATE-----)"
        ));
    }
    let certificate =
        Certificate::from_pem(&pem).map_err(|e| format!("`{shown}` is not valid PEM: {e}"))?;
    // rustls parses each certificate only when it becomes a root; do it now, so a damaged
    // file is refused with the configuration, not at the first send.
    TlsParameters::builder("localhost".to_owned())
        .certificate_store(CertificateStore::None)
        .add_root_certificate(certificate.clone())
        .build_rustls()
        .map_err(|e| format!("`{shown}` holds a certificate that cannot be a CA: {e}"))?;
    Ok(certificate)
}

/// The RFC 5322 message: From, To, Subject, Message-ID, plain-text body.
fn build(mail: Outgoing<'_>) -> Result<Message, SendError> {
    let from: Mailbox = mail
        .from
        .parse()
        .map_err(|e| SendError::permanent(format!("from address `{}`: {e}", mail.from)))?;
    let to: Mailbox = mail
        .to
        .parse()
        .map_err(|e| SendError::permanent(format!("to address `{}`: {e}", mail.to)))?;
    Message::builder()
        .from(from)
        .to(to)
        .subject(mail.subject)
        .message_id(Some(mail.message_id.to_owned()))
        .header(ContentType::TEXT_PLAIN)
        .body(mail.body.to_owned())
        .map_err(|e| SendError::permanent(format!("message: {e}")))
}

/// Implicit TLS over a socket we opened (so it has TCP_NODELAY). lettre only hands out its
/// TLS client as `AsyncNetworkStream`, marked deprecated in 0.11 ("not meant to be public")
/// yet the only way to put TLS under a session built on our own socket; it speaks the
/// futures-io traits, and a session takes a tokio stream, hence this adapter. Contained
/// here so a lettre upgrade touches one place.
#[allow(deprecated)]
mod implicit {
    use futures_util::io::{AsyncRead as FuturesRead, AsyncWrite as FuturesWrite};
    use lettre::transport::smtp::client::{AsyncNetworkStream, AsyncTokioStream, TlsParameters};
    use std::io;
    use std::net::SocketAddr;
    use std::pin::Pin;
    use std::task::{Context, Poll};
    use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
    use tokio::net::TcpStream;

    /// A TLS session (rustls, through lettre) over a TCP socket, as a tokio stream.
    #[derive(Debug)]
    pub(super) struct TlsStream(AsyncNetworkStream);

    impl TlsStream {
        /// The TLS handshake over `tcp`, checking the server against `params`.
        pub(super) async fn handshake(
            tcp: TcpStream,
            params: TlsParameters,
        ) -> Result<TlsStream, lettre::transport::smtp::Error> {
            let mut stream = AsyncNetworkStream::use_existing_tokio1(Box::new(tcp));
            stream.upgrade_tls(params).await?;
            Ok(TlsStream(stream))
        }
    }

    impl AsyncRead for TlsStream {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            let unfilled = buf.initialize_unfilled();
            match Pin::new(&mut self.0).poll_read(cx, unfilled) {
                Poll::Ready(Ok(n)) => {
                    buf.advance(n);
                    Poll::Ready(Ok(()))
                }
                Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
                Poll::Pending => Poll::Pending,
            }
        }
    }

    impl AsyncWrite for TlsStream {
        fn poll_write(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &[u8],
        ) -> Poll<io::Result<usize>> {
            Pin::new(&mut self.0).poll_write(cx, buf)
        }

        fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_flush(cx)
        }

        fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
            Pin::new(&mut self.0).poll_close(cx)
        }
    }

    impl AsyncTokioStream for TlsStream {
        fn peer_addr(&self) -> io::Result<SocketAddr> {
            self.0.peer_addr()
        }
    }
}
