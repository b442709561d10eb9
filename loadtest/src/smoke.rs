//! `--smoke`: a scenario's shape in a few seconds. The crowd, the stock, the wait for the
//! opening and the chaos window are cut down, and the figures a short run on a busy machine
//! cannot hold (drain rate, bursts, fairness, ETAs, shedding, sold out) are not judged: what
//! is left is every invariant, through the current binaries and contract. The test suite runs
//! every shipped scenario this way, so that a change of contract cannot break one silently.

use std::time::Duration;

use crate::scenario::Scenario;

/// Users in a smoke run (split across the waves of a scenario that has them).
pub const USERS: u64 = 200;
/// The longest wait for a sale's opening in a smoke run.
const OPENS_IN: Duration = Duration::from_secs(2);
/// Faults and the window they are drawn in, at most, in a smoke run.
const FAULTS: u32 = 3;
const FAULT_WINDOW: Duration = Duration::from_secs(2);

/// Cuts `scenario` down to a smoke run.
pub fn cut_down(scenario: &mut Scenario) {
    let crowd = &mut scenario.crowd;
    crowd.users = crowd.users.min(USERS);
    // The whole crowd within about a second.
    crowd.arrival_rate = crowd.arrival_rate.max(crowd.users);
    crowd.sale_opens_in = crowd.sale_opens_in.map(|d| d.min(OPENS_IN));
    let per_wave = (USERS / scenario.waves.len().max(1) as u64).max(1);
    for wave in &mut scenario.waves {
        wave.users = wave.users.min(per_wave);
        wave.arrival_rate = wave.arrival_rate.max(wave.users);
        wave.sold_out = false;
        wave.resold = false;
    }
    if let Some(chaos) = &mut scenario.chaos {
        chaos.faults = chaos.faults.min(FAULTS);
        chaos.window = chaos.window.min(FAULT_WINDOW);
    }
    // Half a unit a user at most, so that a sale still sells out and refuses.
    let stock_cap = (USERS / 2).max(1);
    if let Some(sales) = scenario
        .gateway
        .get_mut("sale")
        .and_then(toml::Value::as_array_mut)
    {
        for sale in sales.iter_mut().filter_map(toml::Value::as_table_mut) {
            if let Some(stock) = sale.get("stock").and_then(toml::Value::as_integer) {
                sale.insert("stock".into(), stock.min(stock_cap as i64).into());
            }
        }
    }
    let expect = &mut scenario.expect;
    expect.sold_out = false;
    expect.resold = false;
    expect.store_outage_seen = false;
    expect.shed_max = None;
    expect.drain_tolerance = None;
    expect.burst_limit = None;
    expect.overtaken_max = None;
    expect.eta_error_p90_max = None;
    expect.winners_mean_gap_max = None;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_smoke_run_is_small_short_and_judges_no_figure() {
        let mut s = Scenario::parse(
            "name = \"big\"\nstore = \"redis\"\n[crowd]\nusers = 50_000\narrival_rate = 500\n\
             sale_opens_in = \"10s\"\n[chaos]\nfaults = 10\nwindow = \"4s\"\nkinds = [\"redis_pause\"]\n\
             [expect]\nsold_out = true\ndrain_tolerance = 0.05\nburst_limit = 1.1\n\
             [[gateway.sale]]\nsku = \"a\"\nstock = 1_000\n",
        )
        .expect("a valid scenario");
        cut_down(&mut s);
        assert_eq!(s.crowd.users, USERS);
        assert!(
            s.crowd.arrival_rate >= USERS,
            "the crowd arrives within a second"
        );
        assert_eq!(s.crowd.sale_opens_in, Some(OPENS_IN));
        let chaos = s.chaos.as_ref().expect("chaos kept");
        assert_eq!((chaos.faults, chaos.window), (FAULTS, FAULT_WINDOW));
        let stock = s.gateway["sale"][0]["stock"].as_integer();
        assert_eq!(stock, Some(100));
        assert!(!s.expect.sold_out);
        assert_eq!(s.expect.drain_tolerance, None);
        assert_eq!(s.expect.burst_limit, None);
    }

    #[test]
    fn a_small_scenario_keeps_its_size() {
        let mut s = Scenario::parse(
            "name = \"small\"\n[crowd]\nusers = 40\narrival_rate = 10\n\
             [[gateway.sale]]\nsku = \"a\"\nstock = 7\n",
        )
        .expect("a valid scenario");
        cut_down(&mut s);
        assert_eq!(s.crowd.users, 40);
        assert_eq!(s.crowd.arrival_rate, 40);
        assert_eq!(s.gateway["sale"][0]["stock"].as_integer(), Some(7));
    }
}
