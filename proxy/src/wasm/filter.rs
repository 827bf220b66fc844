//! [`WasmFilter`]: a loaded plugin behind the native [`Filter`] trait.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderName, HeaderValue, Response, StatusCode};
use wasmtime::component::Resource;

use super::bindings::{Decision as WitDecision, Options, Reply};
use super::limits;
use super::pool::Pool;
use crate::body::Body;
use crate::cluster::Clusters;
use crate::filter::{Decision, Filter, FilterError, FilterRequest, FilterResponse, PhaseFuture, RequestCtx};

pub(crate) struct WasmFilter {
    pub name: Arc<str>,
    pub pool: Pool,
    pub options: Options,
    pub body_limit: usize,
    pub cpu: Duration,
    pub clusters: Arc<Clusters>,
}

impl WasmFilter {
    /// Logs a failure with what only the host knows (phase, trap text), then hands it to
    /// the chain, which counts it in `weft_filter_errors_total` (for every filter kind,
    /// so it is not counted here too) and applies the entry's failure mode.
    fn fail(&self, phase: &'static str, err: FilterError) -> FilterError {
        tracing::warn!(filter = %self.name, phase, kind = err.kind(), error = %err, "wasm filter failed");
        err
    }

    fn reply(&self, reply: Reply) -> Result<Response<Body>, FilterError> {
        if reply.body.len() > self.body_limit {
            return Err(FilterError::LimitExceeded("body"));
        }
        let status = StatusCode::from_u16(reply.status)
            .map_err(|_| FilterError::Other(format!("replied with invalid status {}", reply.status)))?;
        let mut response = Response::new(Body::full(reply.body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        for (name, value) in reply.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| FilterError::Other(format!("replied with invalid header name {name:?}")))?;
            let value = HeaderValue::from_str(&value)
                .map_err(|_| FilterError::Other(format!("replied with an invalid value for header {name}")))?;
            headers.append(name, value);
        }
        Ok(response)
    }

    fn decide(&self, decision: WitDecision) -> Result<Decision, FilterError> {
        match decision {
            WitDecision::Continue => Ok(Decision::Continue),
            WitDecision::Respond(reply) => self.reply(reply).map(Decision::Respond),
            // Resolve the name here, where the guest can be blamed by name, and hand the
            // chain the config's own `Arc` (no allocation).
            WitDecision::Reroute(cluster) => match self.clusters.get_key_value(cluster.as_str()) {
                Some((name, _)) => Ok(Decision::Reroute(name.clone())),
                None => Err(FilterError::Other(format!("rerouted to unknown cluster {cluster:?}"))),
            },
        }
    }

    async fn request_phase(&self, req: &mut FilterRequest, ctx: &mut RequestCtx) -> Result<Decision, FilterError> {
        let mut instance = self.pool.acquire().await?;
        let state = instance.store.data_mut();
        std::mem::swap(&mut state.phase.req_head, &mut req.head);
        state.phase.req_body = req.body.take();
        state.meta.set(ctx);
        limits::start_call(&mut instance.store, self.cpu);
        let hooks = instance.world.weft_filter_hooks();
        let clock = instance.store.data().budget.slices.clone();
        let call = hooks.call_on_request(&mut instance.store, Resource::new_borrow(0));
        let result = limits::sliced(clock, call).await;
        let state = instance.store.data_mut();
        std::mem::swap(&mut state.phase.req_head, &mut req.head);
        req.body = state.phase.req_body.take();
        match result {
            Ok(decision) => {
                self.pool.release(instance);
                self.decide(decision)
            }
            Err(e) => Err(limits::classify(&e, instance.store.data_mut())),
        }
    }

    async fn response_phase(&self, resp: &mut FilterResponse, ctx: &mut RequestCtx) -> Result<Decision, FilterError> {
        let mut instance = self.pool.acquire().await?;
        let state = instance.store.data_mut();
        std::mem::swap(&mut state.phase.resp_head, &mut resp.head);
        state.phase.resp_body = resp.body.take();
        state.meta.set(ctx);
        limits::start_call(&mut instance.store, self.cpu);
        let hooks = instance.world.weft_filter_hooks();
        let clock = instance.store.data().budget.slices.clone();
        let call = hooks.call_on_response(&mut instance.store, Resource::new_borrow(0));
        let result = limits::sliced(clock, call).await;
        let state = instance.store.data_mut();
        std::mem::swap(&mut state.phase.resp_head, &mut resp.head);
        resp.body = state.phase.resp_body.take();
        match result {
            Ok(decision) => {
                self.pool.release(instance);
                self.decide(decision)
            }
            Err(e) => Err(limits::classify(&e, instance.store.data_mut())),
        }
    }
}

impl Filter for WasmFilter {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_request<'a>(&'a self, req: &'a mut FilterRequest, ctx: &'a mut RequestCtx) -> PhaseFuture<'a> {
        Box::pin(async move { self.request_phase(req, ctx).await.map_err(|e| self.fail("request", e)) })
    }

    fn on_response<'a>(&'a self, resp: &'a mut FilterResponse, ctx: &'a mut RequestCtx) -> PhaseFuture<'a> {
        Box::pin(async move {
            self.response_phase(resp, ctx)
                .await
                .map_err(|e| self.fail("response", e))
        })
    }

    fn request_body_limit(&self) -> Option<usize> {
        self.options.request_body.then_some(self.body_limit)
    }

    fn response_body_limit(&self) -> Option<usize> {
        self.options.response_body.then_some(self.body_limit)
    }
}
