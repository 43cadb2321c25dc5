//! A WebSocket bot echo (`voxproxy echo --ws`): it speaks Twilio's Media
//! Streams protocol as a bot, the way `ws.protocol = "twilio"` expects, and
//! sends every caller `media` straight back as a bot `media` with the same
//! payload, so `voxproxy sim` measures the round trip through the proxy's
//! WebSocket leg as it does through the RTP one.
//!
//! Every connection is its own task; messages over [`MAX_MESSAGE`] bytes
//! close it (a Twilio media message is well under 1 KiB).
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use voxproxy_rig::ws_echo::WsEcho;
//!
//! let echo = WsEcho::bind("127.0.0.1:0".parse().unwrap()).await?;
//! println!("bot on ws://{}/", echo.local_addr()?);
//! let echoed = echo.run_until(tokio::time::sleep(std::time::Duration::from_secs(60))).await;
//! println!("{echoed} media messages echoed");
//! # Ok(()) }
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use futures_util::{SinkExt as _, StreamExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// Largest WebSocket message (and frame) a bot connection accepts, bytes.
pub const MAX_MESSAGE: usize = 64 * 1024;

/// A listening bot echo.
#[derive(Debug)]
pub struct WsEcho {
    listener: TcpListener,
    echoed: Arc<AtomicU64>,
}

impl WsEcho {
    /// Listens on the TCP address `addr` (port 0: any free port).
    ///
    /// # Errors
    /// The address cannot be bound.
    pub async fn bind(addr: SocketAddr) -> io::Result<WsEcho> {
        Ok(WsEcho { listener: TcpListener::bind(addr).await?, echoed: Arc::new(AtomicU64::new(0)) })
    }

    /// The address it listens on.
    ///
    /// # Errors
    /// The socket's address cannot be read.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Accepts bot connections until `shutdown` resolves, each on its own
    /// task; returns how many media messages were echoed. Connections still
    /// open end with the runtime.
    pub async fn run_until<F: Future>(self, shutdown: F) -> u64 {
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = self.listener.accept() => {
                    // Accept errors (e.g. out of file descriptors) end only that attempt.
                    let Ok((tcp, _)) = accepted else { continue };
                    let _ = tcp.set_nodelay(true);
                    tokio::spawn(echo_bot(tcp, Arc::clone(&self.echoed)));
                }
            }
        }
        self.echoed.load(Ordering::Relaxed)
    }
}

/// One bot call: every caller `media` goes back with the same payload.
async fn echo_bot(tcp: TcpStream, echoed: Arc<AtomicU64>) {
    let config =
        WebSocketConfig::default().max_message_size(Some(MAX_MESSAGE)).max_frame_size(Some(MAX_MESSAGE));
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(config)).await else { return };
    while let Some(Ok(message)) = ws.next().await {
        let Message::Text(text) = message else { continue };
        let Some(reply) = reply_to(&text) else { continue };
        if ws.send(Message::Text(reply.into())).await.is_err() {
            return;
        }
        echoed.fetch_add(1, Ordering::Relaxed);
    }
}

/// The bot's answer to one caller message: `media` comes back as `media`
/// with the same stream and payload; anything else gets no answer.
fn reply_to(text: &str) -> Option<String> {
    let value = serde_json::from_str::<serde_json::Value>(text).ok()?;
    if value["event"] != "media" {
        return None;
    }
    let reply = serde_json::json!({
        "event": "media",
        "streamSid": value["streamSid"],
        "media": {"payload": value["media"]["payload"]},
    });
    Some(reply.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn media_comes_back_with_its_stream_and_payload_and_nothing_else_is_answered() {
        let media = r#"{"event":"media","sequenceNumber":"3","streamSid":"MZ1","media":{"track":"inbound","chunk":"2","timestamp":"40","payload":"//8A"}}"#;
        let reply: serde_json::Value = serde_json::from_str(&reply_to(media).unwrap()).unwrap();
        assert_eq!(reply, serde_json::json!({"event":"media","streamSid":"MZ1","media":{"payload":"//8A"}}));
        assert_eq!(reply_to(r#"{"event":"start","streamSid":"MZ1"}"#), None);
        assert_eq!(reply_to("not json"), None);
    }

    #[tokio::test]
    async fn a_bot_connection_echoes_media_and_is_counted() {
        let echo = WsEcho::bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let addr = echo.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(echo.run_until(async {
            stopped.await.ok();
        }));
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp).await.unwrap();
        let media = r#"{"event":"media","streamSid":"MZ9","media":{"payload":"AAEC"}}"#;
        ws.send(Message::Text(media.into())).await.unwrap();
        let back = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await.unwrap();
        let text = back.unwrap().unwrap().into_text().unwrap();
        assert!(text.contains("\"AAEC\"") && text.contains("\"MZ9\""), "{text}");
        // An oversized message closes the connection instead of buffering it.
        let _ = ws.send(Message::Text("x".repeat(MAX_MESSAGE + 1).into())).await;
        let after = tokio::time::timeout(std::time::Duration::from_secs(5), ws.next()).await.unwrap();
        assert!(!matches!(after, Some(Ok(Message::Text(_)))), "{after:?}");
        stop.send(()).unwrap();
        assert_eq!(server.await.unwrap(), 1);
    }
}
