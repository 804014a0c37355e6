//! Interning of label names and values.
//!
//! Each distinct string is stored once and named by a [`Symbol`]; series keep their labels as
//! pairs of symbols (8 bytes a label instead of two owned strings). Symbols are never freed
//! while the head lives (churned values accumulate until the process restarts; block cuts in a
//! later version rebuild the table).

use std::collections::HashMap;
use std::sync::Arc;

use parking_lot::RwLock;

/// A reference to an interned string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(u32);

#[derive(Debug, Default)]
struct Table {
    /// foldhash: several times faster than SipHash on short strings, and randomly seeded per
    /// process, so crafted label values cannot aim at collisions.
    by_text: HashMap<Arc<str>, Symbol, foldhash::fast::RandomState>,
    texts: Vec<Arc<str>>,
}

/// A thread-safe, append-only string interner.
#[derive(Debug, Default)]
pub struct SymbolTable {
    table: RwLock<Table>,
}

impl SymbolTable {
    /// An empty table.
    pub fn new() -> SymbolTable {
        SymbolTable::default()
    }

    /// The symbol for `text`, adding it if new.
    pub fn intern(&self, text: &str) -> Symbol {
        self.intern_shared(text).0
    }

    /// The symbol for `text` and the shared string, adding it if new.
    pub fn intern_shared(&self, text: &str) -> (Symbol, Arc<str>) {
        {
            let table = self.table.read();
            if let Some((shared, symbol)) = table.by_text.get_key_value(text) {
                return (*symbol, shared.clone());
            }
        }
        let mut table = self.table.write();
        if let Some((shared, symbol)) = table.by_text.get_key_value(text) {
            return (*symbol, shared.clone());
        }
        let index = u32::try_from(table.texts.len()).expect("fewer than 2^32 distinct strings");
        let symbol = Symbol(index);
        let shared: Arc<str> = Arc::from(text);
        table.texts.push(shared.clone());
        table.by_text.insert(shared.clone(), symbol);
        (symbol, shared)
    }

    /// The symbol for `text` if it was interned before.
    pub fn lookup(&self, text: &str) -> Option<Symbol> {
        self.table.read().by_text.get(text).copied()
    }

    /// The text of `symbol`.
    pub fn resolve(&self, symbol: Symbol) -> Arc<str> {
        self.table.read().texts[symbol.0 as usize].clone()
    }

    /// A read view for resolving many symbols under one lock acquisition.
    pub fn reader(&self) -> SymbolReader<'_> {
        SymbolReader {
            table: self.table.read(),
        }
    }

    /// Number of distinct strings.
    pub fn len(&self) -> usize {
        self.table.read().texts.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Resolves symbols while holding the table's read lock.
pub struct SymbolReader<'a> {
    table: parking_lot::RwLockReadGuard<'a, Table>,
}

impl SymbolReader<'_> {
    /// The text of `symbol`.
    pub fn resolve(&self, symbol: Symbol) -> &str {
        &self.table.texts[symbol.0 as usize]
    }

    /// The shared text of `symbol`.
    pub fn resolve_shared(&self, symbol: Symbol) -> &Arc<str> {
        &self.table.texts[symbol.0 as usize]
    }
}

impl std::fmt::Debug for SymbolReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SymbolReader")
            .field("symbols", &self.table.texts.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interning_is_idempotent_and_resolvable() {
        let table = SymbolTable::new();
        let job = table.intern("job");
        let api = table.intern("api");
        assert_eq!(table.intern("job"), job);
        assert_ne!(job, api);
        assert_eq!(&*table.resolve(api), "api");
        assert_eq!(table.lookup("nope"), None);
        assert_eq!(table.reader().resolve(job), "job");
        assert_eq!(table.len(), 2);
    }
}
