//! Transactional messages with a manual clock: visibility, rollback, check-back answered by
//! another producer of the group, settlement after the last check, restart with pending halves.

mod common;

use common::{Fixture, batch};

use std::time::Duration;

use weir_core::{Broker, Decision, Error, TransactionState, UnresolvedOutcome};

/// A broker that settles undecided transactions after 3 checks, by `unresolved`.
async fn open(fixture: &Fixture, unresolved: UnresolvedOutcome) -> Broker {
    let mut config = fixture.config();
    config.transactions.max_checks = 3;
    config.transactions.unresolved = unresolved;
    fixture.open_with(config).await
}

fn count(broker: &Broker, topic: &str) -> usize {
    broker
        .read(topic, 0, 0, 1000)
        .map_or(0, |records| records.len())
}

#[tokio::test]
async fn half_messages_are_invisible_until_commit_and_gone_on_rollback() {
    let fixture = Fixture::new();
    let broker = open(&fixture, UnresolvedOutcome::Rollback).await;
    broker
        .create_topic("orders", Default::default())
        .await
        .unwrap();
    broker
        .create_topic("points", Default::default())
        .await
        .unwrap();
    let transaction = broker.begin_transaction("order-service", None).unwrap();
    broker
        .send_half(transaction, "orders", None, batch(&["order 1"]))
        .await
        .unwrap();
    broker
        .send_half(transaction, "points", None, batch(&["+10", "+5"]))
        .await
        .unwrap();
    assert_eq!(
        count(&broker, "orders") + count(&broker, "points"),
        0,
        "invisible before commit"
    );
    assert_eq!(broker.transactions().unwrap()[0].parts, 2);
    let confirms = broker.commit_transaction(transaction).await.unwrap();
    assert_eq!(confirms.len(), 2);
    assert_eq!((count(&broker, "orders"), count(&broker, "points")), (1, 2));
    assert!(broker.transactions().unwrap().is_empty());
    assert!(matches!(
        broker.commit_transaction(transaction).await,
        Err(Error::NotFound(_))
    ));

    let rolled_back = broker.begin_transaction("order-service", None).unwrap();
    broker
        .send_half(rolled_back, "orders", None, batch(&["order 2"]))
        .await
        .unwrap();
    broker.rollback_transaction(rolled_back).await.unwrap();
    assert_eq!(count(&broker, "orders"), 1);
    broker.shutdown().await;
}

/// The producer committed its local transaction and died before telling the broker: another
/// producer of the same group answers the check-back, and the messages become visible.
#[tokio::test]
async fn a_check_back_is_answered_by_another_producer_of_the_group() {
    let fixture = Fixture::new();
    let broker = open(&fixture, UnresolvedOutcome::Rollback).await;
    let transaction = broker.begin_transaction("payments", None).unwrap();
    broker
        .send_half(transaction, "charges", None, batch(&["charge 42"]))
        .await
        .unwrap();
    let mut survivor = broker.register_transaction_checker("payments");
    let mut stranger = broker.register_transaction_checker("shipping");
    fixture.clock.advance(Duration::from_millis(5_999));
    broker.tick().await;
    assert_eq!(survivor.try_next(), None, "not before the timeout");
    fixture.clock.advance(Duration::from_millis(1));
    broker.tick().await;
    assert_eq!(survivor.try_next(), Some(transaction));
    assert_eq!(
        stranger.try_next(),
        None,
        "only the transaction's group is asked"
    );
    broker.tick().await;
    assert_eq!(
        survivor.try_next(),
        None,
        "no second check before the interval"
    );
    broker
        .resolve_transaction(transaction, Decision::Commit)
        .await
        .unwrap();
    assert_eq!(count(&broker, "charges"), 1);
    fixture.clock.advance(Duration::from_secs(60));
    broker.tick().await;
    assert_eq!(
        survivor.try_next(),
        None,
        "a decided transaction is never checked again"
    );
    broker.shutdown().await;
}

#[tokio::test]
async fn a_transaction_nobody_answers_is_settled_after_max_checks() {
    for (outcome, visible) in [
        (UnresolvedOutcome::Rollback, 0),
        (UnresolvedOutcome::Commit, 1),
    ] {
        let fixture = Fixture::new();
        let broker = open(&fixture, outcome).await;
        let transaction = broker.begin_transaction("ghosts", None).unwrap();
        broker
            .send_half(transaction, "haunted", None, batch(&["boo"]))
            .await
            .unwrap();
        let mut checker = broker.register_transaction_checker("ghosts");
        let mut checks = 0;
        for _ in 0..10 {
            fixture.clock.advance(Duration::from_secs(6));
            broker.tick().await;
            while checker.try_next().is_some() {
                checks += 1; // Answered "unknown": nothing is sent back.
            }
        }
        assert_eq!(checks, 3);
        assert!(broker.transactions().unwrap().is_empty());
        assert_eq!(count(&broker, "haunted"), visible, "{outcome:?}");
        broker.shutdown().await;
    }
}

/// Broker killed (here: stopped without deciding) with pending half messages: after restart
/// the transaction is still there and checks continue until it is resolved.
#[tokio::test]
async fn pending_transactions_and_their_checks_survive_a_restart() {
    let fixture = Fixture::new();
    let transaction = {
        let broker = open(&fixture, UnresolvedOutcome::Rollback).await;
        let transaction = broker.begin_transaction("billing", None).unwrap();
        broker
            .send_half(transaction, "invoices", None, batch(&["invoice 7"]))
            .await
            .unwrap();
        let mut checker = broker.register_transaction_checker("billing");
        fixture.clock.advance(Duration::from_secs(6));
        broker.tick().await;
        assert_eq!(checker.try_next(), Some(transaction));
        broker.shutdown().await;
        transaction
    };
    let broker = open(&fixture, UnresolvedOutcome::Rollback).await;
    let pending = broker.transactions().unwrap();
    assert_eq!(pending.len(), 1);
    assert_eq!(pending[0].checks, 1);
    assert_eq!(pending[0].state, TransactionState::Open);
    let mut checker = broker.register_transaction_checker("billing");
    fixture.clock.advance(Duration::from_secs(6));
    broker.tick().await;
    assert_eq!(checker.try_next(), Some(transaction));
    broker.commit_transaction(transaction).await.unwrap();
    assert_eq!(count(&broker, "invoices"), 1);
    broker.shutdown().await;
}

/// A transaction's own timeout, shorter than the broker's, is the one honoured.
#[tokio::test]
async fn a_transactions_own_timeout_is_honoured() {
    let fixture = Fixture::new();
    let broker = open(&fixture, UnresolvedOutcome::Rollback).await;
    let transaction = broker
        .begin_transaction("fast", Some(Duration::from_secs(1)))
        .unwrap();
    broker
        .send_half(transaction, "quick", None, batch(&["q"]))
        .await
        .unwrap();
    let mut checker = broker.register_transaction_checker("fast");
    fixture.clock.advance(Duration::from_millis(999));
    broker.tick().await;
    assert_eq!(checker.try_next(), None);
    fixture.clock.advance(Duration::from_millis(1));
    broker.tick().await;
    assert_eq!(checker.try_next(), Some(transaction));
    broker.shutdown().await;
}
