//! The sales this instance runs: each sale's tasks (its drain and its opening), started
//! for the sales of the config at start and for those created while it runs.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::context::SaleContext;
use super::Sale;

/// Starts `sale`'s drain and opening on the context's task tracker, until `shutdown` (or
/// the sale's end).
pub fn start_tasks(ctx: &Arc<SaleContext>, sale: &Arc<Sale>, shutdown: &CancellationToken) {
    ctx.sale_tasks.spawn(super::drain::run(
        ctx.clone(),
        sale.clone(),
        shutdown.clone(),
    ));
    ctx.sale_tasks.spawn(super::opening::run(
        ctx.clone(),
        sale.clone(),
        shutdown.clone(),
    ));
}
