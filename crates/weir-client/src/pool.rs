//! One shared connection per server address, reopened when it fails.

use std::collections::HashMap;

use bytes::Bytes;
use parking_lot::Mutex;
use weir_proto::ApiKey;

use crate::connection::{Connection, ConnectionConfig};
use crate::error::Result;

/// Connections by address. Every user of an address shares one connection (requests are
/// multiplexed on it); a failed connection is replaced on the next [`Pool::get`].
#[derive(Debug, Default)]
pub struct Pool {
    config: ConnectionConfig,
    connections: Mutex<HashMap<String, Connection>>,
}

impl Pool {
    /// An empty pool opening connections with `config`.
    pub fn new(config: ConnectionConfig) -> Pool {
        Pool {
            config,
            connections: Mutex::new(HashMap::new()),
        }
    }

    /// Sends `request` (without a payload) to the server at `addr`, with the connection's
    /// request timeout; its answer.
    pub async fn call<Req, Resp>(&self, addr: &str, api: ApiKey, request: &Req) -> Result<Resp>
    where
        Req: prost::Message,
        Resp: prost::Message + Default,
    {
        let conn = self.get(addr).await?;
        let (answer, _) = conn
            .call::<Req, Resp>(api, request, Bytes::new(), None)
            .await?;
        Ok(answer)
    }

    /// The open connection to `addr`, opening one if there is none or the last one failed.
    pub async fn get(&self, addr: &str) -> Result<Connection> {
        if let Some(conn) = self.connections.lock().get(addr)
            && !conn.is_closed()
        {
            return Ok(conn.clone());
        }
        let fresh = Connection::connect(addr, self.config.clone()).await?;
        let mut connections = self.connections.lock();
        // Another task may have connected meanwhile: keep theirs, drop ours.
        if let Some(existing) = connections.get(addr)
            && !existing.is_closed()
        {
            return Ok(existing.clone());
        }
        connections.insert(addr.to_owned(), fresh.clone());
        Ok(fresh)
    }
}
