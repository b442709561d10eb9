//! One buyer's journey: fetch a token, order (perhaps with several clicks), follow the ticket,
//! retry what says "try again", and resubmit the token after the outcome when asked to.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http::{Method, StatusCode};

use crate::client::{Answer, Crowd, NoAnswer};
use crate::tally::{Route, Series, Tally};

/// How every user of the run behaves.
pub struct Plan {
    /// One shared client per gateway instance.
    pub crowds: Vec<Crowd>,
    /// Whether a request that got no answer is tried again on another instance (as a load
    /// balancer does when an instance dies) instead of ending the journey.
    pub failover: bool,
    /// Where the answers go.
    pub tally: Arc<Tally>,
    /// Order requests fired at once with the same token.
    pub clicks: u32,
    /// Resubmissions of the token after the outcome.
    pub replays: u32,
    /// Retries after a retryable refusal.
    pub retries: u32,
    /// No user goes on past this instant.
    pub deadline: tokio::time::Instant,
    /// How often a queued ticket is polled (`None`: as its Retry-After says).
    pub poll_every: Option<Duration>,
}

/// How a journey ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The user holds an order.
    Reserved,
    /// Told the sale is sold out.
    SoldOut,
    /// Refused for good with this code.
    Refused(String),
    /// Left after a retryable refusal (abandoned, or out of retries) with this code.
    GaveUp(String),
    /// A request got no answer.
    Unanswered,
    /// Still going when the crowd's time ran out.
    Unfinished,
}

impl Outcome {
    /// A short label for reports.
    pub fn label(&self) -> String {
        match self {
            Self::Reserved => "reserved".into(),
            Self::SoldOut => "sold_out".into(),
            Self::Refused(code) => format!("refused:{code}"),
            Self::GaveUp(code) => format!("gave_up:{code}"),
            Self::Unanswered => "unanswered".into(),
            Self::Unfinished => "unfinished".into(),
        }
    }
}

/// What one user ended with.
#[derive(Debug, Clone)]
pub struct Journey {
    /// The user id sent in the identity header.
    pub user: String,
    /// The sale it came for.
    pub sku: String,
    /// How it ended.
    pub outcome: Outcome,
    /// Order ids the user was told about (distinct).
    pub orders: Vec<String>,
    /// Orders the user was told failed in delivery (stock given back).
    pub failed_orders: Vec<String>,
    /// Answers to the same token that disagreed (two order ids, a replay with another answer).
    pub mismatches: u32,
    /// What the first disagreeing answers said, for the report.
    pub disagreed: Vec<String>,
    /// An order request went unanswered or hit an unavailable store: the user may hold an
    /// order it never heard of.
    pub lost_reply_possible: bool,
    /// When its order was last queued (a 202), and the wait that answer promised.
    pub admitted: Option<(Instant, Duration)>,
    /// When its queued ticket was first seen decided.
    pub served: Option<Instant>,
    /// When an order of it was first answered `prequeued` (it joined the pre-queue).
    pub prequeued_at: Option<Instant>,
}

impl Journey {
    /// Keeps the first few disagreements' words.
    fn note(&mut self, what: String) {
        if self.disagreed.len() < 3 {
            self.disagreed.push(what);
        }
    }
}

/// What the order answers (all clicks together) said.
enum Said {
    Reserved(String),
    Queued(String),
    Refused(Answer),
    Nothing,
}

/// What to do after a refusal.
enum Next {
    Retry(Duration),
    Stop(Outcome),
}

impl Plan {
    /// The client of instance `n` (counted round the instances).
    fn via(&self, n: usize) -> &Crowd {
        &self.crowds[n % self.crowds.len()]
    }
}

/// Runs `user`'s journey to buy `sku`, starting on instance `home`; `abandons` users leave
/// at the first retryable refusal.
pub async fn run(plan: &Plan, user: String, sku: String, abandons: bool, home: usize) -> Journey {
    let started = Instant::now();
    let mut journey = Journey {
        user,
        sku,
        outcome: Outcome::Unfinished,
        orders: Vec::new(),
        failed_orders: Vec::new(),
        mismatches: 0,
        disagreed: Vec::new(),
        lost_reply_possible: false,
        admitted: None,
        served: None,
        prequeued_at: None,
    };
    let walked =
        tokio::time::timeout_at(plan.deadline, walk(plan, &mut journey, abandons, home)).await;
    journey.outcome = walked.unwrap_or(Outcome::Unfinished);
    plan.tally.journey(started.elapsed());
    journey
}

async fn walk(plan: &Plan, j: &mut Journey, abandons: bool, home: usize) -> Outcome {
    let mut budget = plan.retries;
    // Every retry goes to the next instance, as a load balancer spreads them.
    let mut at = home;
    let token_path = format!("/sale/{}/token", j.sku);
    let token = loop {
        let r = plan
            .via(at)
            .send(Method::POST, &token_path, &j.user, &[])
            .await;
        plan.tally.answer(Route::Token, &r, Series::Token);
        let a = match r {
            Ok(a) => a,
            Err(_) if plan.failover => Answer::went_away(),
            Err(_) => return Outcome::Unanswered,
        };
        if a.status == StatusCode::OK {
            match a.field("token") {
                Some(t) => break t.to_owned(),
                None => return Outcome::Refused("no_token_in_answer".into()),
            }
        }
        match next(&a, abandons, &mut budget) {
            Next::Retry(wait) => tokio::time::sleep(wait).await,
            Next::Stop(outcome) => return outcome,
        }
        at += 1;
    };
    loop {
        let via = plan.via(at);
        let refusal = match order(plan, via, j, &token).await {
            Said::Reserved(id) => return reserved(plan, at, j, &token, id).await,
            Said::Queued(ticket) => match follow(plan, via, j, &ticket).await {
                Followed::Reserved(id) => return reserved(plan, at, j, &token, id).await,
                Followed::Done(outcome) => return outcome,
                Followed::Refused(a) => a,
            },
            Said::Refused(a) => a,
            Said::Nothing if plan.failover => Answer::went_away(),
            Said::Nothing => return Outcome::Unanswered,
        };
        match next(&refusal, abandons, &mut budget) {
            Next::Retry(wait) => tokio::time::sleep(wait).await,
            Next::Stop(Outcome::SoldOut) => return sold_out(plan, at, j, &token).await,
            Next::Stop(outcome) => return outcome,
        }
        at += 1;
    }
}

/// Fires the user's clicks at once and merges what they said.
async fn order(plan: &Plan, via: &Crowd, j: &mut Journey, token: &str) -> Said {
    let path = format!("/sale/{}/order", j.sku);
    let headers = [("x-sale-token", token)];
    let clicks = (0..plan.clicks).map(|_| via.send(Method::POST, &path, &j.user, &headers));
    let answers = futures_util::future::join_all(clicks).await;
    let mut said = Said::Nothing;
    for r in answers {
        let admitted = matches!(&r, Ok(a) if a.status == StatusCode::CREATED || a.status == StatusCode::ACCEPTED);
        let series = if admitted {
            Series::OrderAdmitted
        } else {
            Series::OrderRefused
        };
        plan.tally.answer(Route::Order, &r, series);
        let a = match r {
            Ok(a) => a,
            Err(NoAnswer::Timeout | NoAnswer::Transport(_)) => {
                j.lost_reply_possible = true;
                continue;
            }
        };
        let reserved = a.status == StatusCode::CREATED;
        plan.tally.second(Instant::now(), |s| {
            if admitted {
                s.admitted += 1;
            } else {
                s.refused += 1;
            }
        });
        if a.code() == "store_unavailable" {
            j.lost_reply_possible = true;
        }
        if a.status == StatusCode::ACCEPTED && a.field("status") == Some("prequeued") {
            // No place and no promise yet: they come at the opening (see `follow`).
            j.prequeued_at.get_or_insert_with(Instant::now);
        } else if a.status == StatusCode::ACCEPTED {
            let promised = a.body.get("eta_ms").and_then(serde_json::Value::as_u64);
            j.admitted = Some((Instant::now(), Duration::from_millis(promised.unwrap_or(0))));
            j.served = None;
        }
        said = match (said, reserved, a.status == StatusCode::ACCEPTED) {
            (Said::Reserved(first), true, _) => {
                if a.field("order_id") != Some(first.as_str()) {
                    j.mismatches += 1;
                    j.note(format!(
                        "a click said order {first}, another {:?}",
                        a.field("order_id")
                    ));
                }
                Said::Reserved(first)
            }
            (_, true, _) => match a.field("order_id") {
                Some(id) => Said::Reserved(id.to_owned()),
                None => Said::Refused(a),
            },
            (Said::Reserved(first), false, _) => Said::Reserved(first),
            (_, false, true) => match a.field("ticket") {
                Some(t) => Said::Queued(t.to_owned()),
                None => Said::Refused(a),
            },
            (Said::Queued(t), false, false) => Said::Queued(t),
            (_, false, false) => Said::Refused(a),
        };
    }
    said
}

/// How following a ticket ended.
enum Followed {
    Reserved(String),
    Done(Outcome),
    Refused(Answer),
}

/// Polls the ticket, never faster than its Retry-After, until it is decided.
async fn follow(plan: &Plan, via: &Crowd, j: &mut Journey, ticket: &str) -> Followed {
    let path = format!("/sale/tickets/{ticket}");
    let mut wait = plan.poll_every.unwrap_or(Duration::from_secs(1));
    loop {
        tokio::time::sleep(wait).await;
        let r = via.send(Method::GET, &path, &j.user, &[]).await;
        let a = match r {
            Ok(a) if a.status.is_success() => a,
            // The instance holding the ticket died (or forgot it in a restart): order again
            // with the same token elsewhere; the store remembers what it decided.
            Err(_) if plan.failover => {
                j.lost_reply_possible = true;
                return Followed::Refused(Answer::went_away());
            }
            Ok(a) if plan.failover && a.code() == "unknown_ticket" => {
                j.lost_reply_possible = true;
                return Followed::Refused(Answer::went_away());
            }
            other => {
                plan.tally.answer(Route::Poll, &other, Series::Poll);
                return Followed::Done(match other {
                    Ok(a) => Outcome::Refused(a.code()),
                    Err(_) => Outcome::Unanswered,
                });
            }
        };
        // Polls are tallied by the ticket's status: "queued", "confirmed", "failed:<error>".
        let status = a.field("status").unwrap_or("").to_owned();
        // A pre-queued ticket got its place at the opening: the wait it promises from now.
        if status == "queued" && j.admitted.is_none() {
            let promised = a.body.get("eta_ms").and_then(serde_json::Value::as_u64);
            j.admitted = Some((Instant::now(), Duration::from_millis(promised.unwrap_or(0))));
        }
        if status == "prequeued" {
            wait = Duration::from_secs(a.retry_after.unwrap_or(1).max(1));
            plan.tally
                .answer_as(Route::Poll, status, a.took, Series::Poll);
            continue;
        }
        if status != "queued" && j.served.is_none() {
            j.served = Some(Instant::now());
        }
        let shown = match a.field("error") {
            Some(error) => format!("{status}:{error}"),
            None => status.clone(),
        };
        plan.tally
            .answer_as(Route::Poll, shown, a.took, Series::Poll);
        wait = match plan.poll_every {
            Some(every) => every,
            None => Duration::from_secs(a.retry_after.unwrap_or(1).max(1)),
        };
        match status.as_str() {
            "queued" => continue,
            // Cancelled by the backend after it (unpaid): the user did hold the order.
            "reserved" | "confirmed" | "cancelled" => {
                return match a.field("order_id") {
                    Some(id) => Followed::Reserved(id.to_owned()),
                    None => Followed::Done(Outcome::Refused("no_order_id_in_ticket".into())),
                }
            }
            "sold_out" => return Followed::Done(Outcome::SoldOut),
            "failed" => {
                let error = a.field("error").unwrap_or("failed").to_owned();
                if let Some(id) = a.field("order_id") {
                    j.failed_orders.push(id.to_owned());
                }
                if error == "store_unavailable" {
                    j.lost_reply_possible = true;
                }
                // A refused processing step ("try again" codes) is retried like a refused order.
                let mut refusal = a;
                refusal.body = serde_json::json!({ "error": error });
                refusal.status = StatusCode::SERVICE_UNAVAILABLE;
                return Followed::Refused(refusal);
            }
            other => return Followed::Done(Outcome::Refused(other.to_owned())),
        }
    }
}

/// The user holds `id`: remember it and resubmit the token as often as the plan says, each
/// time expecting the same order: reserved or confirmed, or — once its delivery failed for
/// good and its stock went back — `delivery_failed`, or once the backend cancelled it
/// (unpaid) `order_cancelled`, always with the same order id.
async fn reserved(plan: &Plan, at: usize, j: &mut Journey, token: &str, id: String) -> Outcome {
    plan.tally.second(Instant::now(), |s| s.reserved += 1);
    if !j.orders.contains(&id) {
        j.orders.push(id.clone());
    }
    let same = |a: &Answer| {
        let ours = a.field("order_id") == Some(id.as_str());
        ours && (a.status == StatusCode::CREATED
            || a.code() == "delivery_failed"
            || a.code() == "order_cancelled")
    };
    match replay(plan, at, j, token, Series::OrderAdmitted, same).await {
        true => Outcome::Reserved,
        false => Outcome::Unanswered,
    }
}

/// The user was told "sold out": a resubmission of the same token must say so again.
async fn sold_out(plan: &Plan, at: usize, j: &mut Journey, token: &str) -> Outcome {
    let same = |a: &Answer| a.code() == "sold_out";
    match replay(plan, at, j, token, Series::OrderRefused, same).await {
        true => Outcome::SoldOut,
        false => Outcome::Unanswered,
    }
}

/// Resubmits the token `plan.replays` times, each to the next instance after `at`, counting
/// answers that are not `same` as mismatches; "not now" answers (the store or an instance
/// unavailable) say nothing either way. False when one got no answer at all (and instances
/// are not failed over).
async fn replay(
    plan: &Plan,
    at: usize,
    j: &mut Journey,
    token: &str,
    series: Series,
    same: impl Fn(&Answer) -> bool,
) -> bool {
    let path = format!("/sale/{}/order", j.sku);
    for n in 0..plan.replays as usize {
        let r = plan
            .via(at + 1 + n)
            .send(Method::POST, &path, &j.user, &[("x-sale-token", token)])
            .await;
        plan.tally.answer(Route::Replay, &r, series);
        match r {
            Ok(a) if same(&a) => {}
            Ok(a) if is_not_now(&a) => {}
            Ok(a) => {
                j.mismatches += 1;
                j.note(format!(
                    "a replay said {} {} (order {:?})",
                    a.status.as_u16(),
                    a.code(),
                    a.field("order_id")
                ));
            }
            Err(_) if plan.failover => {}
            Err(_) => return false,
        }
    }
    true
}

/// An answer that says "not now" rather than anything about the token.
fn is_not_now(a: &Answer) -> bool {
    matches!(
        a.code().as_str(),
        "store_unavailable"
            | "rate_limited"
            | "too_many_connections"
            | "shutting_down"
            | "not_ready"
    )
}

/// What a refusal means for the user: wait and retry, or stop.
fn next(a: &Answer, abandons: bool, budget: &mut u32) -> Next {
    let code = a.code();
    let wait = Duration::from_secs(a.retry_after.unwrap_or(1).max(1));
    match code.as_str() {
        // The crowd waits for the opening; only the run's deadline bounds that.
        "sale_not_started" => Next::Retry(Duration::from_millis(500)),
        "queue_full"
        | "rate_limited"
        | "store_unavailable"
        | "too_many_connections"
        | "shutting_down"
        | "not_ready"
        | "instance_gone" => {
            if abandons || *budget == 0 {
                Next::Stop(Outcome::GaveUp(code))
            } else {
                *budget -= 1;
                Next::Retry(wait)
            }
        }
        "sold_out" => Next::Stop(Outcome::SoldOut),
        _ => Next::Stop(Outcome::Refused(code)),
    }
}
