//! SIP dialogs (RFC 3261 §12): the state two user agents share after a
//! 2xx (or an early dialog after a tagged 1xx), and building requests in it.

use std::net::SocketAddr;

use super::message::{name_addr_uri, param};
use super::{Message, Method, SipUri};

/// Most `Record-Route` entries kept as a route set.
pub const MAX_ROUTE_SET: usize = 8;

/// One dialog, seen from our side.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dialog {
    /// `Call-ID`.
    pub call_id: String,
    /// Our tag.
    pub local_tag: String,
    /// Their tag.
    pub remote_tag: String,
    /// Our `From`/`To` value with tag, as sent.
    pub local_party: String,
    /// Their `From`/`To` value with tag, as received.
    pub remote_party: String,
    /// Where requests go: the peer's `Contact` URI.
    pub remote_target: String,
    /// `Record-Route` URIs, in the order our requests use them.
    pub route_set: Vec<String>,
    /// Our last CSeq number.
    pub local_cseq: u32,
    /// Their last CSeq number, once they sent a request.
    pub remote_cseq: Option<u32>,
}

impl Dialog {
    /// The dialog a 2xx (or tagged 1xx) to our INVITE creates (§12.1.2).
    /// `None` when the response lacks a To tag.
    #[must_use]
    pub fn from_uac(request: &Message, response: &Message) -> Option<Self> {
        let remote_party = response.header("To")?.to_owned();
        let remote_tag = param(&remote_party, "tag").filter(|t| !t.is_empty())?.to_owned();
        let local_party = request.header("From")?.to_owned();
        let local_tag = param(&local_party, "tag")?.to_owned();
        let remote_target = response
            .list_values("Contact")
            .next()
            .and_then(name_addr_uri)
            .filter(|uri| SipUri::parse(uri).is_ok())
            .map_or_else(|| uri_of(request), str::to_owned);
        let mut route_set: Vec<String> =
            response.list_values("Record-Route").filter_map(name_addr_uri).map(str::to_owned).collect();
        // An unparseable route or target would make every request in the
        // dialog unparseable for the peer: use only valid SIP URIs.
        route_set.retain(|uri| SipUri::parse(uri).is_ok());
        route_set.reverse();
        route_set.truncate(MAX_ROUTE_SET);
        Some(Self {
            call_id: request.call_id()?.to_owned(),
            local_tag,
            remote_tag,
            local_party,
            remote_party,
            remote_target,
            route_set,
            local_cseq: request.cseq()?.0,
            remote_cseq: None,
        })
    }

    /// Whether an incoming request belongs to this dialog (their From tag,
    /// our To tag, same Call-ID).
    #[must_use]
    pub fn owns_request(&self, request: &Message) -> bool {
        request.call_id() == Some(self.call_id.as_str())
            && request.header("From").and_then(|f| param(f, "tag")) == Some(self.remote_tag.as_str())
            && request.header("To").and_then(|t| param(t, "tag")) == Some(self.local_tag.as_str())
    }

    /// A request in the dialog (§12.2.1.1) with the given top `Via`. The
    /// CSeq rises by one except for ACK, which reuses `ack_cseq`.
    #[must_use]
    pub fn request(&mut self, method: &Method, via: String, ack_cseq: Option<u32>) -> Message {
        let cseq = match (&method, ack_cseq) {
            (Method::Ack, Some(n)) => n,
            _ => {
                self.local_cseq = self.local_cseq.wrapping_add(1);
                self.local_cseq
            }
        };
        // Loose routing (RFC 3261 §16.12): Request-URI is the remote target
        // and the route set goes into Route headers. Strict routers (RFC
        // 2543) are not supported.
        let mut message = Message::request(method.clone(), self.remote_target.clone())
            .with("Via", via)
            .with("Max-Forwards", "70")
            .with("From", self.local_party.clone())
            .with("To", self.remote_party.clone())
            .with("Call-ID", self.call_id.clone())
            .with("CSeq", format!("{cseq} {method}"));
        for route in &self.route_set {
            message.push("Route", format!("<{route}>"));
        }
        message
    }

    /// Where requests in the dialog are sent: the first route, else the
    /// remote target, when it is an IP literal; else `fallback` (the
    /// address the caller resolved for the original target).
    #[must_use]
    pub fn next_hop(&self, fallback: SocketAddr) -> SocketAddr {
        self.route_set
            .first()
            .unwrap_or(&self.remote_target)
            .parse_uri()
            .and_then(|uri| uri.socket_addr())
            .unwrap_or(fallback)
    }
}

trait ParseUri {
    fn parse_uri(&self) -> Option<SipUri>;
}

impl ParseUri for String {
    fn parse_uri(&self) -> Option<SipUri> {
        SipUri::parse(self).ok()
    }
}

fn uri_of(request: &Message) -> String {
    match &request.start {
        super::StartLine::Request { uri, .. } => uri.clone(),
        super::StartLine::Response { .. } => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_from_a_2xx_with_record_route() {
        let invite = Message::request(Method::Invite, "sip:bob@192.0.2.9")
            .with("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1")
            .with("From", "<sip:a@10.0.0.1>;tag=ours")
            .with("To", "<sip:bob@192.0.2.9>")
            .with("Call-ID", "c")
            .with("CSeq", "7 INVITE");
        let ok = Message::response(200)
            .with("Via", "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK1")
            .with("From", "<sip:a@10.0.0.1>;tag=ours")
            .with("To", "<sip:bob@192.0.2.9>;tag=theirs")
            .with("Call-ID", "c")
            .with("CSeq", "7 INVITE")
            .with("Record-Route", "<sip:192.0.2.50;lr>, <sip:192.0.2.51;lr>")
            .with("Contact", "\"Bob\" <sip:bob@192.0.2.9:5080>");
        let mut dialog = Dialog::from_uac(&invite, &ok).unwrap();
        assert_eq!(dialog.remote_tag, "theirs");
        assert_eq!(dialog.remote_target, "sip:bob@192.0.2.9:5080");
        assert_eq!(dialog.route_set, vec!["sip:192.0.2.51;lr", "sip:192.0.2.50;lr"]);
        assert_eq!(dialog.next_hop("127.0.0.1:1".parse().unwrap()), "192.0.2.51:5060".parse().unwrap());
        let bye = dialog.request(&Method::Bye, "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK2".into(), None);
        assert_eq!(bye.cseq(), Some((8, Method::Bye)));
        assert_eq!(
            bye.header_values("Route").collect::<Vec<_>>(),
            vec!["<sip:192.0.2.51;lr>", "<sip:192.0.2.50;lr>"]
        );
        let ack = dialog.request(&Method::Ack, "SIP/2.0/UDP 10.0.0.1;branch=z9hG4bK3".into(), Some(7));
        assert_eq!(ack.cseq(), Some((7, Method::Ack)));
        let mut untagged = ok.clone();
        untagged.remove("To");
        untagged.push("To", "<sip:bob@192.0.2.9>");
        assert!(Dialog::from_uac(&invite, &untagged).is_none());
        let mut junk = ok;
        junk.remove("Contact");
        junk.push("Contact", "<sip:bob@bad host>");
        junk.push("Record-Route", "<http://x>");
        let fallback = Dialog::from_uac(&invite, &junk).unwrap();
        assert_eq!(fallback.remote_target, "sip:bob@192.0.2.9", "invalid Contact: the Request-URI is kept");
        assert_eq!(fallback.route_set.len(), 2);
        dialog.route_set.clear();
        dialog.remote_target = "sip:bob@pbx.example".into();
        assert_eq!(dialog.next_hop("127.0.0.1:1".parse().unwrap()), "127.0.0.1:1".parse().unwrap());
    }
}
