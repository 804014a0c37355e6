//! Planning, fetching and evaluation (being written).

use std::sync::atomic::AtomicBool;
use std::time::Instant;

use lookout_storage::Storage;

use super::{EngineOptions, QueryError, QueryOutput};
use crate::Expr;

#[derive(Debug)]
pub(crate) struct Plan {
    expr: Expr,
}

#[derive(Debug)]
pub(crate) struct Fetched;

impl Plan {
    pub(crate) fn new(
        expr: Expr,
        _start: i64,
        _end: i64,
        _step: i64,
        _options: &EngineOptions,
    ) -> Plan {
        Plan { expr }
    }

    pub(crate) async fn fetch(
        &self,
        _storage: &dyn Storage,
        _max_samples: u64,
    ) -> Result<Fetched, QueryError> {
        Ok(Fetched)
    }

    pub(crate) fn evaluate(
        self,
        _data: Fetched,
        _options: &EngineOptions,
        _deadline: Instant,
        _cancel: &AtomicBool,
    ) -> Result<QueryOutput, QueryError> {
        let _ = self.expr;
        Err(QueryError::Execution("not implemented".into()))
    }
}
