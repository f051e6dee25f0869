//! One way to Redis for every part of a node that uses it (the hot tier, the shared
//! rate limits): a single server through a reconnecting [`ConnectionManager`], or a
//! Redis Cluster through the cluster client, which routes each command to its key's
//! slot, follows MOVED and ASK, and finds the promoted replica after a failover.
//!
//! A link connects on first use, so a node starts while Redis is down, and after a
//! failure it stops trying for `retry_interval`: a dead Redis costs one timeout per
//! interval, not one per request.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use ::redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use ::redis::cluster::ClusterClient;
use ::redis::cluster_async::ClusterConnection;
use ::redis::cluster_routing::{RoutingInfo, SingleNodeRoutingInfo};
use ::redis::{Client, Cmd, Pipeline, RedisFuture, Value};
use tokio::sync::Mutex as AsyncMutex;

use crate::config::RedisSettings;
use crate::tiers::HotTierError;

/// A connection to a single server or to a cluster; cheap to clone, shared by every
/// task of the node (both multiplex their requests).
#[derive(Clone)]
pub enum Connection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Connection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Connection::Single(c) => c.req_packed_command(cmd),
            Connection::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(&'a mut self, pipeline: &'a Pipeline, offset: usize, count: usize) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Connection::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Connection::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Connection::Single(c) => c.get_db(),
            Connection::Cluster(c) => c.get_db(),
        }
    }
}

enum Target {
    Single(Client),
    Cluster(Box<ClusterClient>),
}

/// A node's way to Redis.
pub struct RedisLink {
    target: Target,
    timeout: Duration,
    retry_interval: Duration,
    /// Created on first use.
    connection: AsyncMutex<Option<Connection>>,
    /// Until when Redis is considered down after a failure.
    down_until: Mutex<Option<Instant>>,
    /// The cluster's node URLs as configured (for pub/sub).
    nodes: Vec<String>,
}

impl RedisLink {
    /// A link for `settings`; does not connect yet.
    pub fn new(settings: &RedisSettings) -> Result<RedisLink, ::redis::RedisError> {
        let timeout = Duration::from_millis(settings.timeout_ms);
        let target = if settings.cluster {
            let client = ClusterClient::builder(settings.urls().map(str::to_owned).collect::<Vec<_>>())
                .connection_timeout(timeout)
                .response_timeout(timeout)
                // A failover takes the cluster's node timeout plus an election; a
                // request retries across it within the caller's deadline.
                .retries(6)
                .min_retry_wait(50)
                .max_retry_wait(500)
                .build()?;
            Target::Cluster(Box::new(client))
        } else {
            let mut info: ::redis::ConnectionInfo = settings.url.trim().parse()?;
            if let Some(db) = settings.db {
                let redis_settings = info.redis_settings().clone().set_db(db);
                info = info.set_redis_settings(redis_settings);
            }
            Target::Single(Client::open(info)?)
        };
        Ok(RedisLink {
            target,
            timeout,
            retry_interval: Duration::from_millis(settings.retry_interval_ms),
            connection: AsyncMutex::new(None),
            down_until: Mutex::new(None),
            nodes: settings.urls().map(str::to_owned).collect(),
        })
    }

    /// Whether this link talks to a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// One round trip's deadline.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The shared connection, opened on first use.
    pub async fn connection(&self) -> Result<Connection, HotTierError> {
        let mut slot = self.connection.lock().await;
        if let Some(connection) = slot.as_ref() {
            return Ok(connection.clone());
        }
        let connection = match &self.target {
            Target::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.timeout))
                    .set_response_timeout(Some(self.timeout))
                    .set_number_of_retries(1)
                    .set_max_delay(self.retry_interval);
                Connection::Single(client.get_connection_manager_with_config(config).await.map_err(HotTierError::Redis)?)
            }
            Target::Cluster(client) => Connection::Cluster(client.get_async_connection().await.map_err(HotTierError::Redis)?),
        };
        *slot = Some(connection.clone());
        Ok(connection)
    }

    /// A connection for pub/sub (one of its own): to the server, or to the first
    /// cluster node that answers (a cluster delivers a message published on any
    /// node to the subscribers of every node).
    pub async fn pubsub(&self) -> Result<::redis::aio::PubSub, ::redis::RedisError> {
        let clients = match &self.target {
            Target::Single(client) => vec![client.clone()],
            Target::Cluster(_) => self.nodes.iter().filter_map(|url| Client::open(url.as_str()).ok()).collect(),
        };
        let mut failure = None;
        for client in clients {
            match tokio::time::timeout(self.timeout, client.get_async_pubsub()).await {
                Ok(Ok(pubsub)) => return Ok(pubsub),
                Ok(Err(e)) => failure = Some(e),
                Err(_) => {
                    failure = Some(::redis::RedisError::from(std::io::Error::new(std::io::ErrorKind::TimedOut, "pub/sub connection timed out")))
                }
            }
        }
        Err(failure.unwrap_or_else(|| ::redis::RedisError::from(std::io::Error::other("no Redis node to subscribe on"))))
    }

    /// Drops the shared connection, so the next use opens a fresh one.
    pub async fn reset(&self) {
        self.connection.lock().await.take();
    }

    /// Whether a recent failure says not to try yet.
    fn in_backoff(&self) -> bool {
        let guard = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        guard.is_some_and(|until| Instant::now() < until)
    }

    /// Records the outcome of a round trip: a failure starts a back-off interval.
    fn mark(&self, succeeded: bool) {
        let mut guard = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
        *guard = if succeeded { None } else { Some(Instant::now() + self.retry_interval) };
    }

    /// Runs `work` unless in back-off, within `deadline`, and records the outcome.
    pub async fn guarded<T>(
        &self,
        deadline: Duration,
        work: impl std::future::Future<Output = Result<T, HotTierError>>,
    ) -> Result<T, HotTierError> {
        if self.in_backoff() {
            return Err(HotTierError::Backoff);
        }
        let result = tokio::time::timeout(deadline, work)
            .await
            .unwrap_or(Err(HotTierError::Timeout(deadline.as_millis() as u64)));
        self.mark(result.is_ok());
        result
    }

    /// Checks that the server is what `redis.cluster` says it is. `Ok(None)`: it
    /// could not be asked (Redis down: the node starts and counts misses).
    pub async fn check_mode(&self) -> Result<Option<()>, String> {
        let info = async {
            let mut connection = match &self.target {
                // The cluster client itself refuses a server that is not a cluster.
                Target::Cluster(client) => {
                    return match client.get_async_connection().await {
                        Ok(connection) => {
                            *self.connection.lock().await = Some(Connection::Cluster(connection));
                            Ok(Some(true))
                        }
                        Err(e) if e.to_string().contains("cluster support disabled") => Ok(Some(false)),
                        Err(e) if e.is_io_error() || e.is_timeout() || e.is_connection_refusal() => Ok(None),
                        Err(e) => Err(e),
                    };
                }
                Target::Single(_) => match self.connection().await {
                    Ok(connection) => connection,
                    Err(_) => return Ok(None),
                },
            };
            let info: String = ::redis::cmd("INFO").arg("cluster").query_async(&mut connection).await?;
            Ok::<_, ::redis::RedisError>(Some(info.contains("cluster_enabled:1")))
        };
        match tokio::time::timeout(self.timeout * 4, info).await {
            Err(_) | Ok(Ok(None)) => Ok(None),
            Ok(Ok(Some(cluster))) if cluster == self.is_cluster() => Ok(Some(())),
            Ok(Ok(Some(true))) => {
                Err("names a Redis Cluster node; set redis.cluster = true (REDIS_CLUSTER=true) to use it as a cluster".into())
            }
            Ok(Ok(Some(false))) => {
                Err("redis.cluster is set but the server is not a Redis Cluster (cluster_enabled:0)".into())
            }
            Ok(Err(e)) => Err(format!("names no usable Redis Cluster: {e}")),
        }
    }

    /// Every key matching `pattern`: SCAN on the server, or on every master of a
    /// cluster in turn.
    pub async fn scan(&self, connection: &mut Connection, pattern: &str) -> Result<Vec<String>, HotTierError> {
        let nodes = match connection {
            Connection::Single(_) => vec![None],
            Connection::Cluster(cluster) => masters(cluster).await?.into_iter().map(Some).collect(),
        };
        let mut keys = Vec::new();
        for node in nodes {
            let mut cursor = 0u64;
            loop {
                let mut scan = ::redis::cmd("SCAN");
                scan.arg(cursor).arg("MATCH").arg(pattern).arg("COUNT").arg(1000);
                let (next, batch): (u64, Vec<String>) = match (&node, &mut *connection) {
                    (Some((host, port)), Connection::Cluster(cluster)) => {
                        let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::ByAddress { host: host.clone(), port: *port });
                        let value = cluster.route_command(scan, routing).await.map_err(HotTierError::Redis)?;
                        ::redis::from_redis_value(value).map_err(|e| HotTierError::Redis(e.into()))?
                    }
                    (_, connection) => scan.query_async(connection).await.map_err(HotTierError::Redis)?,
                };
                keys.extend(batch);
                if next == 0 {
                    break;
                }
                cursor = next;
            }
        }
        Ok(keys)
    }
}

/// The cluster's masters that are not marked failed, from `CLUSTER NODES`.
async fn masters(cluster: &mut ClusterConnection) -> Result<Vec<(String, u16)>, HotTierError> {
    let routing = RoutingInfo::SingleNode(SingleNodeRoutingInfo::RandomPrimary);
    let value = cluster.route_command(::redis::cmd("CLUSTER").arg("NODES").clone(), routing).await.map_err(HotTierError::Redis)?;
    let text: String = ::redis::from_redis_value(value).map_err(|e| HotTierError::Redis(e.into()))?;
    Ok(parse_masters(&text))
}

/// `host:port` of each healthy master line of `CLUSTER NODES` output.
fn parse_masters(text: &str) -> Vec<(String, u16)> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let address = fields.nth(1)?;
            let flags = fields.next()?;
            let is_master = flags.split(',').any(|f| f == "master");
            let failed = flags.split(',').any(|f| f == "fail" || f == "fail?" || f == "noaddr");
            if !is_master || failed {
                return None;
            }
            let address = address.split('@').next()?;
            let (host, port) = address.rsplit_once(':')?;
            Some((host.to_owned(), port.parse().ok()?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_masters_are_read_from_cluster_nodes() {
        let text = "\
07c3 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460
67ed 127.0.0.1:30002@40002 master - 0 1 2 connected 5461-10922
292f 127.0.0.1:30003@40003 master,fail - 0 1 3 connected
6ec2 127.0.0.1:30004@40004 slave 292f 0 1 3 connected
e7d1 127.0.0.1:30005@40005 master - 0 1 7 connected 10923-16383
";
        assert_eq!(
            parse_masters(text),
            vec![("127.0.0.1".into(), 30001), ("127.0.0.1".into(), 30002), ("127.0.0.1".into(), 30005)]
        );
    }
}
