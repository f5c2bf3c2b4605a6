//! Error bodies: etcd's `{"errorCode", "message", "cause", "index"}` for the keys and auth APIs,
//! and `{"message"}` for the members API and other endpoints.

use std::fmt;

use serde::{Deserialize, Serialize};

/// etcd v2's error body. The code says what went wrong (100 key not found, 101 compare failed,
/// ...), `cause` names the key or value involved, `index` is the store index when it happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EtcdError {
    #[serde(rename = "errorCode")]
    pub error_code: u16,
    pub message: String,
    /// Deimos always sends it, possibly empty; etcd leaves an empty one out.
    #[serde(default)]
    pub cause: String,
    /// Always sent by Deimos and etcd; read as 0 from a server that leaves it out.
    #[serde(default)]
    pub index: u64,
}

impl fmt::Display for EtcdError {
    /// `100: Key not found (/foo) [12]`, the shape `etcdctl` v2 prints, so scripts that grep for
    /// the code keep working. An empty cause is left out rather than printed as `()`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_code, self.message)?;
        if !self.cause.is_empty() {
            write!(f, " ({})", self.cause)?;
        }
        write!(f, " [{}]", self.index)
    }
}

/// The members API's (and other non-keys endpoints') error: `{"message": "..."}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Message {
    pub message: String,
}

impl Message {
    pub fn new(message: impl Into<String>) -> Message {
        Message {
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcd_error_round_trips_and_prints_like_etcdctl() {
        let body = r#"{"errorCode":100,"message":"Key not found","cause":"/foo","index":12}"#;
        let e: EtcdError = serde_json::from_str(body).unwrap();
        assert_eq!(e.to_string(), "100: Key not found (/foo) [12]");
        assert_eq!(serde_json::to_string(&e).unwrap(), body);
        // etcd omits an empty cause.
        let e: EtcdError = serde_json::from_str(
            r#"{"errorCode":110,"message":"Insufficient credentials","index":3}"#,
        )
        .unwrap();
        assert_eq!(e.to_string(), "110: Insufficient credentials [3]");
    }

    #[test]
    fn a_message_is_not_an_etcd_error() {
        let body = r#"{"message":"membership: peerURL exists"}"#;
        assert!(serde_json::from_str::<EtcdError>(body).is_err());
        let m: Message = serde_json::from_str(body).unwrap();
        assert_eq!(m, Message::new("membership: peerURL exists"));
        assert_eq!(serde_json::to_string(&m).unwrap(), body);
    }
}
