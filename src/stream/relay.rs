//! The tail across nodes: each node publishes the batches it acknowledged on one
//! Redis pub/sub channel (`<prefix>:v1:tail`) and takes the other nodes' batches from
//! it, so a client on any node follows every node's events. A node takes its own
//! batches at once, without the round trip. Pub/sub keeps nothing: while Redis is
//! down, each node's tail shows its own events only.
//!
//! A message is the publishing node's name and a newline, then for each event its id
//! (36 characters), a space, its JSON line and a newline (a JSON line holds no raw
//! newline).

use std::sync::{Arc, Weak};
use std::time::Duration;

use futures_util::StreamExt;
use uuid::Uuid;

use super::Tail;
use crate::tiers::redis::{RedisLink, KEY_VERSION};
use crate::tiers::{EncodedBatch, HotTierError};

/// One node's end of the shared channel.
pub struct Relay {
    link: Arc<RedisLink>,
    channel: String,
    node: String,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay").field("channel", &self.channel).field("node", &self.node).finish()
    }
}

impl Relay {
    /// The relay named `node` (unique among running tails) over `link`, on the
    /// channel of key prefix `prefix`.
    pub fn new(link: Arc<RedisLink>, prefix: &str, node: String) -> Relay {
        Relay { link, channel: format!("{prefix}:{KEY_VERSION}:tail"), node }
    }

    /// The message carrying `batch`.
    pub(super) fn message(&self, batch: &EncodedBatch) -> Vec<u8> {
        let mut message = Vec::with_capacity(self.node.len() + 1 + batch.events.len() * 600);
        message.extend_from_slice(self.node.as_bytes());
        message.push(b'\n');
        for (event, line) in batch.iter() {
            message.extend_from_slice(event.id.hyphenated().encode_lower(&mut Uuid::encode_buffer()).as_bytes());
            message.push(b' ');
            message.extend_from_slice(line);
            message.push(b'\n');
        }
        message
    }

    /// Publishes a message, within the link's deadline.
    pub(super) async fn publish(&self, message: Vec<u8>) -> Result<(), HotTierError> {
        self.link
            .guarded(self.link.timeout(), async {
                let mut connection = self.link.connection().await?;
                ::redis::cmd("PUBLISH")
                    .arg(&self.channel)
                    .arg(message)
                    .query_async::<i64>(&mut connection)
                    .await
                    .map(|_| ())
                    .map_err(HotTierError::Redis)
            })
            .await
    }

    /// Until `tail` is dropped: subscribes, hands the other nodes' events to the tail,
    /// and subscribes again after a failure.
    pub(super) async fn listen(self: Arc<Self>, tail: Weak<Tail>, retry: Duration) {
        loop {
            match self.link.pubsub().await {
                Ok(mut pubsub) => match pubsub.subscribe(&self.channel).await {
                    Ok(()) => {
                        let mut messages = pubsub.on_message();
                        while let Some(message) = messages.next().await {
                            let Some(tail) = tail.upgrade() else { return };
                            let payload = message.get_payload_bytes();
                            // This node's own batches come back too: it took them at once.
                            if payload.starts_with(self.node.as_bytes()) && payload.get(self.node.len()) == Some(&b'\n') {
                                continue;
                            }
                            match parse(payload) {
                                Some((node, events)) if node != self.node.as_bytes() => {
                                    tail.take(events.into_iter().map(|(id, line)| (id, None, line)))
                                }
                                Some(_) => {}
                                None => tracing::warn!(channel = %self.channel, "a tail message that is not tierlog's; ignored"),
                            }
                        }
                        tracing::debug!("the tail's subscription ended; subscribing again");
                    }
                    Err(e) => tracing::debug!(error = %e, "cannot subscribe to the tail's channel yet"),
                },
                Err(e) => tracing::debug!(error = %e, "cannot open the tail's subscription yet"),
            }
            if tail.strong_count() == 0 {
                return;
            }
            tokio::time::sleep(retry).await;
        }
    }
}

/// A relayed message: the publishing tail's name, and each event's id and line.
type Relayed<'m> = (&'m [u8], Vec<(Uuid, &'m [u8])>);

/// A message's node and events, or `None` if it is not one of tierlog's.
fn parse(message: &[u8]) -> Option<Relayed<'_>> {
    let (node, rest) = message.split_at(memchr::memchr(b'\n', message)?);
    let mut events = Vec::new();
    for record in rest[1..].split(|b| *b == b'\n').filter(|r| !r.is_empty()) {
        let id = Uuid::try_parse_ascii(record.get(..36)?).ok()?;
        let line = record.get(37..).filter(|_| record[36] == b' ')?;
        events.push((id, line));
    }
    Some((node, events))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_are_read_back_and_foreign_ones_refused() {
        let id = Uuid::new_v4();
        let message = format!("node-a\n{id} {{\"id\":\"{id}\"}}\n");
        let (node, events) = parse(message.as_bytes()).expect("parsed");
        assert_eq!(node, b"node-a");
        assert_eq!(events, vec![(id, format!("{{\"id\":\"{id}\"}}").as_bytes())]);
        assert!(parse(b"no newline").is_none());
        assert!(parse(b"node\nnot-a-uuid {}\n").is_none());
    }
}
