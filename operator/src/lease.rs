//! Leader election through a `coordination.k8s.io/v1` Lease, so two operator replicas can
//! run and only one reconciles.
//!
//! The rules are client-go's: a replica takes the lease when nobody holds it or the holder
//! has not renewed it within `leaseDurationSeconds`; the holder renews it every
//! [`LeaseConfig::renew_every`]; every write is a replace carrying the `resourceVersion` it
//! read, so two replicas racing for an expired lease cannot both win (the loser gets 409
//! Conflict and stays a follower). A leader that cannot renew before
//! [`LeaseConfig::renew_deadline`] stops reconciling (the caller exits, and the pod restarts
//! as a follower); one that shuts down cleanly releases the lease so the other replica
//! takes over at once.
//!
//! The decision itself is the pure [`decide`], tested on its own.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::error::Result;

/// How a replica campaigns.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// The Lease's name.
    pub name: String,
    /// The Lease's namespace.
    pub namespace: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a lease stays valid without renewal.
    pub lease_duration: Duration,
    /// How often the leader renews.
    pub renew_every: Duration,
    /// How long the leader keeps leading without a successful renewal.
    pub renew_deadline: Duration,
    /// How often a follower tries to take the lease.
    pub retry_every: Duration,
}

impl LeaseConfig {
    /// client-go's defaults: 15 s lease, renew every 2 s, give up after 10 s.
    pub fn new(name: String, namespace: String, identity: String) -> LeaseConfig {
        LeaseConfig {
            name,
            namespace,
            identity,
            lease_duration: Duration::from_secs(15),
            renew_every: Duration::from_secs(2),
            renew_deadline: Duration::from_secs(10),
            retry_every: Duration::from_secs(2),
        }
    }
}

/// What a replica should do with the lease it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Nobody holds it, or the holder let it expire: take it.
    Acquire,
    /// This replica holds it: renew it.
    Renew,
    /// Another replica holds a live lease.
    Follow {
        /// The holder.
        holder: String,
    },
}

/// The decision for `identity` given the lease's spec at `now`.
pub fn decide(spec: &LeaseSpec, identity: &str, now: Timestamp) -> Decision {
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() {
        return Decision::Acquire;
    }
    if holder == identity {
        return Decision::Renew;
    }
    let duration = SignedDuration::from_secs(i64::from(spec.lease_duration_seconds.unwrap_or(0)));
    let renewed = spec
        .renew_time
        .as_ref()
        .or(spec.acquire_time.as_ref())
        .map(|t| t.0);
    match renewed {
        Some(renewed) if now < renewed.saturating_add(duration).unwrap_or(renewed) => {
            Decision::Follow {
                holder: holder.to_owned(),
            }
        }
        _ => Decision::Acquire,
    }
}

/// One replica's side of the election.
#[derive(Clone)]
pub struct LeaderElector {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl std::fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaderElector")
            .field("config", &self.config)
            .finish()
    }
}

impl LeaderElector {
    /// An elector for `config` over `client`.
    pub fn new(client: Client, config: LeaseConfig) -> LeaderElector {
        LeaderElector {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// Takes or renews the lease; `true` when this replica holds it afterwards. A lost
    /// race (409 Conflict) is `false`, not an error.
    pub async fn try_acquire_or_renew(&self) -> Result<bool> {
        let now = Timestamp::now();
        let seconds = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(seconds),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        match decide(&spec, &self.config.identity, now) {
            Decision::Follow { .. } => return Ok(false),
            Decision::Renew => {}
            Decision::Acquire => {
                spec.holder_identity = Some(self.config.identity.clone());
                spec.acquire_time = Some(MicroTime(now));
                spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            }
        }
        spec.renew_time = Some(MicroTime(now));
        spec.lease_duration_seconds = Some(seconds);
        lease.spec = Some(spec);
        // The replace carries the resourceVersion just read: the optimistic lock.
        conflict_is_false(
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await,
        )
    }

    /// Gives the lease up if this replica holds it, so a follower takes over at once.
    pub async fn release(&self) -> Result<()> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        lease.spec = Some(spec);
        conflict_is_false(
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await,
        )?;
        Ok(())
    }
}

fn conflict_is_false(result: kube::Result<Lease>) -> Result<bool> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fake_api::FakeApi;
    use serde_json::json;

    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/strata-operator";

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    fn held_by(holder: &str, renewed: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(at(renewed))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        assert_eq!(decide(&LeaseSpec::default(), "a", at(0)), Decision::Acquire);
        assert_eq!(decide(&held_by("a", 0), "a", at(100)), Decision::Renew);
        assert_eq!(
            decide(&held_by("b", 0), "a", at(14)),
            Decision::Follow { holder: "b".into() }
        );
        assert_eq!(decide(&held_by("b", 0), "a", at(15)), Decision::Acquire);
        let released = LeaseSpec {
            holder_identity: None,
            ..held_by("b", 0)
        };
        assert_eq!(decide(&released, "a", at(1)), Decision::Acquire);
    }

    fn elector(client: &Client, identity: &str) -> LeaderElector {
        LeaderElector::new(
            client.clone(),
            LeaseConfig::new("strata-operator".into(), "ops".into(), identity.into()),
        )
    }

    #[tokio::test]
    async fn one_replica_leads_and_hands_over_on_release() {
        let (client, fake) = FakeApi::start();
        let (a, b) = (elector(&client, "op-a"), elector(&client, "op-b"));
        assert!(
            a.try_acquire_or_renew().await.unwrap(),
            "a creates the lease"
        );
        assert!(
            !b.try_acquire_or_renew().await.unwrap(),
            "b follows a live lease"
        );
        assert!(a.try_acquire_or_renew().await.unwrap(), "a renews");
        let lease: Lease = fake.get_as(LEASE);
        assert_eq!(lease.spec.unwrap().holder_identity.as_deref(), Some("op-a"));

        a.release().await.unwrap();
        assert!(
            b.try_acquire_or_renew().await.unwrap(),
            "b takes a released lease"
        );
        let spec = fake.get_as::<Lease>(LEASE).spec.unwrap();
        assert_eq!(spec.holder_identity.as_deref(), Some("op-b"));
        assert_eq!(spec.lease_transitions, Some(1));
        assert!(!a.try_acquire_or_renew().await.unwrap());
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_and_a_lost_race_is_not_an_error() {
        let (client, fake) = FakeApi::start();
        fake.insert(
            LEASE,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": "strata-operator", "namespace": "ops"},
                   "spec": {"holderIdentity": "op-dead", "leaseDurationSeconds": 15,
                            "renewTime": "2020-01-01T00:00:00.000000Z"}}),
        );
        let a = elector(&client, "op-a");
        fake.fail_next("PUT", "/leases/strata-operator", 409);
        assert!(
            !a.try_acquire_or_renew().await.unwrap(),
            "another replica won the race"
        );
        assert!(
            a.try_acquire_or_renew().await.unwrap(),
            "then the lease is taken"
        );
        let replace = fake
            .calls()
            .into_iter()
            .rfind(|c| c.method == "PUT")
            .unwrap();
        assert_eq!(replace.body.unwrap()["metadata"]["resourceVersion"], "1");
        fake.fail_next("GET", "/leases/strata-operator", 500);
        assert!(
            a.try_acquire_or_renew().await.is_err(),
            "other errors are errors"
        );
    }
}
