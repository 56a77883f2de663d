//! Walking a table: a two-level iterator over the decoded index and one data block.

use std::sync::Arc;

use super::super::block::BlockIter;
use super::super::error::Result;
use super::super::iterator::InternalIterator;
use super::Table;

/// A two-level iterator over a table: the index block picks a data block, a [`BlockIter`]
/// walks it. Empty data blocks are skipped in both directions.
#[derive(Debug)]
pub struct TableIterator {
    table: Arc<Table>,
    /// Position in the table's index (`None`: before the first or after the last block).
    index: Option<usize>,
    data: Option<BlockIter>,
    fill_cache: bool,
}

impl TableIterator {
    /// An unpositioned iterator over `table`.
    pub(super) fn new(table: Arc<Table>, fill_cache: bool) -> Self {
        TableIterator {
            table,
            index: None,
            data: None,
            fill_cache,
        }
    }

    /// Points `data` at the block the index is on (or at nothing).
    fn load_block(&mut self) -> Result<()> {
        let Some(i) = self.index else {
            self.data = None;
            return Ok(());
        };
        let handle = self.table.index.handle(i);
        if self
            .data
            .as_ref()
            .is_some_and(|d| d.block().offset() == handle.offset)
        {
            return Ok(());
        }
        let block = self.table.read_block(handle, self.fill_cache)?;
        self.data = Some(BlockIter::new(block));
        Ok(())
    }

    fn data_valid(&self) -> bool {
        self.data.as_ref().is_some_and(BlockIter::valid)
    }

    fn skip_forward(&mut self) -> Result<()> {
        while !self.data_valid() {
            let Some(i) = self.index else {
                self.data = None;
                return Ok(());
            };
            self.index = (i + 1 < self.table.index.len()).then_some(i + 1);
            self.load_block()?;
            if let Some(d) = &mut self.data {
                d.seek_to_first()?;
            }
        }
        Ok(())
    }

    fn skip_backward(&mut self) -> Result<()> {
        while !self.data_valid() {
            let Some(i) = self.index else {
                self.data = None;
                return Ok(());
            };
            self.index = i.checked_sub(1);
            self.load_block()?;
            if let Some(d) = &mut self.data {
                d.seek_to_last()?;
            }
        }
        Ok(())
    }

    /// Leaves the iterator invalid if `r` is an error.
    fn guard(&mut self, r: Result<()>) -> Result<()> {
        if r.is_err() {
            self.data = None;
        }
        r
    }

    fn seek_to_first_inner(&mut self) -> Result<()> {
        self.index = (!self.table.index.is_empty()).then_some(0);
        self.load_block()?;
        if let Some(d) = &mut self.data {
            d.seek_to_first()?;
        }
        self.skip_forward()
    }

    fn seek_to_last_inner(&mut self) -> Result<()> {
        self.index = self.table.index.len().checked_sub(1);
        self.load_block()?;
        if let Some(d) = &mut self.data {
            d.seek_to_last()?;
        }
        self.skip_backward()
    }

    fn seek_inner(&mut self, target: &[u8]) -> Result<()> {
        let i = self.table.index.seek(target);
        self.index = (i < self.table.index.len()).then_some(i);
        self.load_block()?;
        if let Some(d) = &mut self.data {
            d.seek(target)?;
        }
        self.skip_forward()
    }

    fn seek_for_prev_inner(&mut self, target: &[u8]) -> Result<()> {
        // The first block whose last key is >= target, or the last block if target is past
        // every key; entries <= target are in it or before it.
        let i = self.table.index.seek(target);
        self.index = if i < self.table.index.len() {
            Some(i)
        } else {
            self.table.index.len().checked_sub(1)
        };
        self.load_block()?;
        if let Some(d) = &mut self.data {
            d.seek_for_prev(target)?;
        }
        self.skip_backward()
    }

    fn next_inner(&mut self) -> Result<()> {
        match &mut self.data {
            Some(d) if d.valid() => d.next()?,
            _ => return Ok(()),
        }
        self.skip_forward()
    }

    fn prev_inner(&mut self) -> Result<()> {
        match &mut self.data {
            Some(d) if d.valid() => d.prev()?,
            _ => return Ok(()),
        }
        self.skip_backward()
    }
}

impl InternalIterator for TableIterator {
    fn valid(&self) -> bool {
        self.data_valid()
    }

    fn key(&self) -> &[u8] {
        self.data.as_ref().map_or(&[], BlockIter::key)
    }

    fn value(&self) -> &[u8] {
        self.data.as_ref().map_or(&[], BlockIter::value)
    }

    fn seek_to_first(&mut self) -> Result<()> {
        let r = self.seek_to_first_inner();
        self.guard(r)
    }

    fn seek_to_last(&mut self) -> Result<()> {
        let r = self.seek_to_last_inner();
        self.guard(r)
    }

    fn seek(&mut self, target: &[u8]) -> Result<()> {
        let r = self.seek_inner(target);
        self.guard(r)
    }

    fn seek_for_prev(&mut self, target: &[u8]) -> Result<()> {
        let r = self.seek_for_prev_inner(target);
        self.guard(r)
    }

    fn next(&mut self) -> Result<()> {
        let r = self.next_inner();
        self.guard(r)
    }

    fn prev(&mut self) -> Result<()> {
        let r = self.prev_inner();
        self.guard(r)
    }
}
