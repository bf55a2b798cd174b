//! Exchanges on the broker: declare, bind, and publish through them. A routed publish is
//! confirmed only when every target topic's append is durable.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::{Broker, Confirm, read, write};
use crate::catalog::valid_name;
use crate::error::{Error, Result};
use crate::exchange::{Binding, Exchange, ExchangeKind};
use crate::topic::{split_batch, wait_all};

/// The answer to a publish through an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoutedConfirm {
    /// Each target topic and where the messages landed in it.
    pub targets: Vec<(String, Confirm)>,
    /// Messages that matched nothing and were dropped (not mandatory, no alternate topic).
    pub dropped: u32,
}

impl Broker {
    fn find_exchange(&self, name: &str) -> Result<Arc<Exchange>> {
        read(&self.inner.exchanges)
            .get(name)
            .cloned()
            .ok_or_else(|| Error::UnknownExchange(name.to_owned()))
    }

    /// Declares an exchange. Declaring one that exists with the same kind and alternate is a
    /// no-op (as in AMQP); with different settings it is an error.
    pub async fn create_exchange(
        &self,
        name: &str,
        kind: ExchangeKind,
        alternate_topic: Option<String>,
    ) -> Result<Exchange> {
        self.check_open()?;
        valid_name("exchange", name)?;
        if let Some(alternate) = &alternate_topic {
            valid_name("topic", alternate)?;
        }
        let _admin = self.inner.admin.lock().await;
        if let Ok(existing) = self.find_exchange(name) {
            return if existing.kind == kind && existing.alternate_topic == alternate_topic {
                Ok((*existing).clone())
            } else {
                Err(Error::ExchangeExists(name.to_owned()))
            };
        }
        let exchange = Exchange {
            name: name.to_owned(),
            kind,
            alternate_topic,
            bindings: Vec::new(),
        };
        self.inner.catalog.save_exchange(&exchange)?;
        write(&self.inner.exchanges).insert(name.to_owned(), Arc::new(exchange.clone()));
        tracing::info!(exchange = name, ?kind, "exchange created");
        Ok(exchange)
    }

    pub async fn delete_exchange(&self, name: &str) -> Result<()> {
        let _admin = self.inner.admin.lock().await;
        self.find_exchange(name)?;
        self.inner.catalog.delete_exchange(name)?;
        write(&self.inner.exchanges).remove(name);
        Ok(())
    }

    pub fn exchanges(&self) -> Vec<Exchange> {
        read(&self.inner.exchanges)
            .values()
            .map(|exchange| (**exchange).clone())
            .collect()
    }

    pub fn exchange(&self, name: &str) -> Result<Exchange> {
        Ok((*self.find_exchange(name)?).clone())
    }

    /// Adds a binding (binding the same thing twice keeps one). The topic is created if
    /// topics are auto-created, else it must exist.
    pub async fn bind(&self, exchange: &str, binding: Binding) -> Result<Exchange> {
        self.check_open()?;
        self.topic_or_create(&binding.topic).await?;
        let _admin = self.inner.admin.lock().await;
        let mut updated = (*self.find_exchange(exchange)?).clone();
        if !updated.bindings.contains(&binding) {
            updated.bindings.push(binding);
        }
        self.inner.catalog.save_exchange(&updated)?;
        write(&self.inner.exchanges).insert(exchange.to_owned(), Arc::new(updated.clone()));
        Ok(updated)
    }

    /// Removes bindings to `topic` with `key` (any key if `None`).
    pub async fn unbind(&self, exchange: &str, topic: &str, key: Option<&str>) -> Result<Exchange> {
        let _admin = self.inner.admin.lock().await;
        let mut updated = (*self.find_exchange(exchange)?).clone();
        updated
            .bindings
            .retain(|binding| binding.topic != topic || key.is_some_and(|key| binding.key != key));
        self.inner.catalog.save_exchange(&updated)?;
        write(&self.inner.exchanges).insert(exchange.to_owned(), Arc::new(updated.clone()));
        Ok(updated)
    }

    /// Messages dropped by exchanges because nothing matched them.
    pub fn unroutable_dropped(&self) -> u64 {
        self.inner.unroutable_dropped.load(Ordering::Relaxed)
    }

    /// Publishes `batch` through `exchange` with `routing_key`. Each target topic gets its own
    /// copy. Messages nothing matches go to the alternate topic if the exchange has one;
    /// otherwise `mandatory` refuses the whole publish with `Unroutable`, and without it they
    /// are dropped and counted.
    pub async fn publish_to_exchange(
        &self,
        exchange: &str,
        routing_key: &str,
        batch: Bytes,
        mandatory: bool,
    ) -> Result<RoutedConfirm> {
        self.check_open()?;
        let batch = self.parse_published(batch)?;
        let exchange = self.find_exchange(exchange)?;
        // Group records by their target set; all but headers exchanges route the whole batch
        // alike, so the common case stays one group and no re-encoding.
        let mut target_sets: Vec<BTreeSet<String>> = Vec::new();
        let mut groups: Vec<u32> = Vec::new();
        let route = |headers: &[(String, Bytes)]| -> BTreeSet<String> {
            let targets = exchange.route(routing_key, headers);
            if targets.is_empty() {
                exchange.alternate_topic.iter().cloned().collect()
            } else {
                targets.into_iter().map(str::to_owned).collect()
            }
        };
        if exchange.kind == ExchangeKind::Headers {
            for record in batch.records() {
                let targets = route(&record?.headers);
                let group = match target_sets.iter().position(|set| *set == targets) {
                    Some(index) => index,
                    None => {
                        target_sets.push(targets);
                        target_sets.len() - 1
                    }
                };
                groups.push(group as u32);
            }
        } else {
            target_sets.push(route(&[]));
            groups = vec![0; batch.record_count() as usize];
        }
        let unroutable: u32 = groups
            .iter()
            .filter(|&&group| target_sets[group as usize].is_empty())
            .count() as u32;
        if unroutable > 0 && mandatory {
            return Err(Error::Unroutable {
                exchange: exchange.name.clone(),
                routing_key: routing_key.to_owned(),
            });
        }
        let parts = if target_sets.len() == 1 {
            vec![(0, batch)]
        } else {
            split_batch(&batch, &groups, target_sets.len() as u32)?
        };
        let mut pending = Vec::new();
        for (group, part) in parts {
            for topic_name in &target_sets[group as usize] {
                let topic = self.topic_or_create(topic_name).await?;
                self.check_backlog(topic_name, u64::from(part.record_count()))?;
                pending.push((topic_name.clone(), topic.submit(None, part.clone()).await?));
            }
        }
        let mut targets: Vec<(String, Confirm)> = Vec::new();
        for (topic_name, confirms) in pending {
            let confirm: Confirm = wait_all(confirms).await?.into();
            match targets.iter_mut().find(|(name, _)| *name == topic_name) {
                Some((_, existing)) => {
                    existing.ranges.extend(confirm.ranges);
                    existing.duplicates.extend(confirm.duplicates);
                    if confirm.durability == crate::config::Durability::Os {
                        existing.durability = confirm.durability;
                    }
                }
                None => targets.push((topic_name, confirm)),
            }
        }
        if unroutable > 0 {
            self.inner
                .unroutable_dropped
                .fetch_add(u64::from(unroutable), Ordering::Relaxed);
        }
        Ok(RoutedConfirm {
            targets,
            dropped: unroutable,
        })
    }
}
