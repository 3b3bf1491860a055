//! What one sidecar may take of wpod's memory: its `resources.limits.memory` for all of its
//! linear memories and tables together. (wasmtime's own `StoreLimits` applies its size to each
//! memory on its own: a component of sixteen core instances could take sixteen times its limit.)
//! Growing past the limit fails the way the guest expects an allocation to fail (`memory.grow`
//! returns -1); a guest that cannot handle that traps, and only it ends.

use wasmtime::ResourceLimiter;

/// Instances, memories and tables a sidecar may create: what the pooling allocator reserves per
/// component, so the on-demand allocator (where pooling is unavailable) is held to the same.
pub const MAX_INSTANCES: usize = 64;
pub const MAX_MEMORIES: usize = 16;
pub const MAX_TABLES: usize = 64;

/// A table element costs a pointer.
const TABLE_ELEMENT_BYTES: usize = std::mem::size_of::<usize>();

pub struct SidecarLimits {
    /// Bytes of linear memory and tables together; `None`: unlimited.
    limit: Option<usize>,
    used: usize,
    /// The growth just allowed, taken back if it then fails.
    pending: usize,
}

impl SidecarLimits {
    pub fn new(memory_bytes: Option<u64>) -> Self {
        SidecarLimits {
            limit: memory_bytes.map(|b| usize::try_from(b).unwrap_or(usize::MAX)),
            used: 0,
            pending: 0,
        }
    }

    /// Bytes in use now, linear memories and tables together.
    pub fn used(&self) -> usize {
        self.used
    }

    fn grow(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
        unit: usize,
    ) -> bool {
        if maximum.is_some_and(|max| desired > max) {
            return false;
        }
        let more = desired.saturating_sub(current).saturating_mul(unit);
        let after = self.used.saturating_add(more);
        if self.limit.is_some_and(|limit| after > limit) {
            return false;
        }
        self.used = after;
        self.pending = more;
        true
    }

    fn undo(&mut self) {
        self.used = self.used.saturating_sub(self.pending);
        self.pending = 0;
    }
}

impl ResourceLimiter for SidecarLimits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired, maximum, 1))
    }

    fn memory_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.undo();
        Ok(())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(self.grow(current, desired, maximum, TABLE_ELEMENT_BYTES))
    }

    fn table_grow_failed(&mut self, _error: wasmtime::Error) -> wasmtime::Result<()> {
        self.undo();
        Ok(())
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_holds_for_all_memories_together() {
        let mut l = SidecarLimits::new(Some(100 << 20));
        // Five memories of 30 MiB each: the first three fit, the fourth does not.
        for _ in 0..3 {
            assert!(l.memory_growing(0, 30 << 20, None).unwrap());
        }
        assert!(!l.memory_growing(0, 30 << 20, None).unwrap());
        assert!(l.memory_growing(0, 10 << 20, None).unwrap());
        assert_eq!(l.used(), 100 << 20);
        // A growth allowed and then failed is given back.
        let mut l = SidecarLimits::new(Some(100));
        assert!(l.memory_growing(0, 60, None).unwrap());
        l.memory_grow_failed(wasmtime::Error::msg("no")).unwrap();
        assert!(l.memory_growing(0, 100, None).unwrap());
        // Tables count a pointer per element.
        let mut l = SidecarLimits::new(Some(800));
        assert!(l.table_growing(0, 100, None).unwrap());
        assert!(!l.table_growing(100, 101, None).unwrap());
        // A memory's own maximum still holds without a limit.
        let mut l = SidecarLimits::new(None);
        assert!(!l.memory_growing(0, 10, Some(5)).unwrap());
    }
}
