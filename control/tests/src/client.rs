//! The tests' client: the API server's own in-process JSON client (paths,
//! `Status` errors, line-delimited watch), so a test can write any object,
//! even one a typed client would refuse to build, and read back exactly
//! what was stored; plus a `kube::Client` over the same API for starting
//! controllers, as a replica hands them one.

use std::ops::Deref;

pub use keel_apiserver::client::{path, ClientError, ClientResult, WatchEvent};

/// Cheap to clone.
#[derive(Clone)]
pub struct Client {
    json: keel_apiserver::client::Client,
    kube: kube::Client,
}

impl Client {
    pub fn new(json: keel_apiserver::client::Client, kube: kube::Client) -> Client {
        Client { json, kube }
    }

    /// The `kube::Client` to hand a control loop.
    pub fn kube(&self) -> &kube::Client {
        &self.kube
    }
}

impl Deref for Client {
    type Target = keel_apiserver::client::Client;

    fn deref(&self) -> &Self::Target {
        &self.json
    }
}
