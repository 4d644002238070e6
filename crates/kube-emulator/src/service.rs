//! [`ServiceModel`]: one Service and its pods, written to the emulator the
//! way Kubernetes' controllers would — each pod change updates the Pod,
//! the Service's EndpointSlice and its Endpoints object in one go.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{Endpoints, Pod};
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::{objects, Emulator};

/// The conditions of one endpoint, as the EndpointSlice controller sets
/// them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EndpointState {
    /// Ready (serving and not terminating).
    pub ready: bool,
    /// Passing its readiness probe (also while terminating).
    pub serving: bool,
    /// Being deleted (deletionTimestamp set).
    pub terminating: bool,
}

impl EndpointState {
    /// Started, readiness probe not passing yet.
    pub const STARTING: EndpointState = EndpointState {
        ready: false,
        serving: false,
        terminating: false,
    };
    /// Running and ready.
    pub const READY: EndpointState = EndpointState {
        ready: true,
        serving: true,
        terminating: false,
    };
    /// Deleted, still passing its readiness probe (graceful shutdown).
    pub const TERMINATING_SERVING: EndpointState = EndpointState {
        ready: false,
        serving: true,
        terminating: true,
    };
    /// Deleted and no longer serving.
    pub const TERMINATING: EndpointState = EndpointState {
        ready: false,
        serving: false,
        terminating: true,
    };
}

#[derive(Clone, Debug)]
struct ModelPod {
    ip: String,
    hostname: Option<String>,
    state: EndpointState,
}

/// One Service (headless) with its pods, kept in the emulator.
#[derive(Debug)]
pub struct ServiceModel {
    namespace: String,
    service: String,
    labels: BTreeMap<String, String>,
    port: Option<i32>,
    /// Pods per slice: Kubernetes spreads endpoints over several slices;
    /// the model puts at most this many endpoints in one.
    per_slice: usize,
    pods: BTreeMap<String, ModelPod>,
    slices_written: usize,
}

impl ServiceModel {
    /// A Service `service` in `namespace` whose pods carry `labels`.
    pub fn new(namespace: &str, service: &str, labels: &[(&str, &str)]) -> ServiceModel {
        ServiceModel {
            namespace: namespace.to_owned(),
            service: service.to_owned(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            port: Some(4369),
            per_slice: 100,
            pods: BTreeMap::new(),
            slices_written: 0,
        }
    }

    /// At most `n` endpoints per EndpointSlice (default 100, as the
    /// controller's default is); with fewer, a Service spans several
    /// slices.
    pub fn with_slice_size(mut self, n: usize) -> ServiceModel {
        self.per_slice = n.max(1);
        self
    }

    /// Adds or changes the pod `name` and updates the emulator.
    pub fn set_pod(
        &mut self,
        emu: &Emulator,
        name: &str,
        ip: &str,
        hostname: Option<&str>,
        state: EndpointState,
    ) {
        self.pods.insert(
            name.to_owned(),
            ModelPod {
                ip: ip.to_owned(),
                hostname: hostname.map(str::to_owned),
                state,
            },
        );
        let labels = self.labels.clone();
        emu.apply::<Pod>(&objects::pod(&self.namespace, name, &labels, ip, state));
        self.publish(emu);
    }

    /// Changes the state of an existing pod.
    pub fn set_state(&mut self, emu: &Emulator, name: &str, state: EndpointState) {
        let Some(p) = self.pods.get(name).cloned() else {
            panic!("no pod {name} in the model");
        };
        self.set_pod(emu, name, &p.ip, p.hostname.as_deref(), state);
    }

    /// The pod is gone (deleted from the API).
    pub fn remove_pod(&mut self, emu: &Emulator, name: &str) {
        self.pods.remove(name);
        emu.delete::<Pod>(&self.namespace, name);
        self.publish(emu);
    }

    /// The pod names in the model.
    pub fn pod_names(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    fn publish(&mut self, emu: &Emulator) {
        let all: Vec<(String, ModelPod)> = self
            .pods
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let chunks: Vec<&[(String, ModelPod)]> = all.chunks(self.per_slice).collect();
        let n = chunks.len().max(1);
        for i in 0..n {
            let eps = chunks
                .get(i)
                .map(|c| {
                    c.iter()
                        .map(|(name, p)| {
                            objects::endpoint(
                                &p.ip,
                                p.hostname.as_deref(),
                                name,
                                &self.namespace,
                                p.state,
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let slice = objects::endpoint_slice(
                &self.namespace,
                &format!("{}-{}", self.service, slice_suffix(i)),
                &self.service,
                eps,
                self.port,
            );
            emu.apply::<EndpointSlice>(&slice);
        }
        for i in n..self.slices_written {
            emu.delete::<EndpointSlice>(
                &self.namespace,
                &format!("{}-{}", self.service, slice_suffix(i)),
            );
        }
        self.slices_written = n;
        let rows: Vec<_> = all
            .iter()
            .map(|(name, p)| (name.clone(), p.ip.clone(), p.hostname.clone(), p.state))
            .collect();
        emu.apply::<Endpoints>(&objects::endpoints(
            &self.namespace,
            &self.service,
            &rows,
            self.port,
        ));
    }
}

fn slice_suffix(i: usize) -> String {
    // Generated-name style suffixes, stable per index.
    let alphabet = b"bcdfghjklmnpqrstvwxz2456789";
    let mut x = i as u64 * 2_654_435_761 + 12_345;
    (0..5)
        .map(|_| {
            let c = alphabet[(x % alphabet.len() as u64) as usize] as char;
            x /= alphabet.len() as u64;
            x += 7;
            c
        })
        .collect()
}
