//! [`WasmFilter`]: a loaded plugin behind the native [`Filter`] trait.

use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Response, StatusCode};
use wasmtime::component::Resource;

use super::admission::Admission;
use super::bindings::{Options, Phases, Reply, WitRequestDecision, WitResponseDecision};
use super::limits;
use super::pool::{Instance, Pool};
use crate::body::Body;
use crate::filter::{
    Filter, FilterError, FilterRequest, FilterResponse, Limit, RequestCtx, RequestDecision, RequestFuture,
    ResponseDecision, ResponseFuture,
};
use crate::header_policy;
use crate::upstream::Clusters;

pub(crate) struct WasmFilter {
    pub name: Arc<str>,
    pub admission: Admission,
    pub pool: Pool,
    pub options: Options,
    pub body_limit: usize,
    pub cpu: Duration,
    pub clusters: Arc<Clusters>,
    pub plugin: crate::filter::PluginInfo,
}

/// Turns a guest's reply into a response, or a [`FilterError`] of the guest's-fault kind
/// (the status is not a final one, a header is not valid HTTP, the body is over
/// `body_limit`). Pure, so the property tests can feed it anything.
pub(crate) fn reply(reply: Reply, body_limit: usize) -> Result<Response<Body>, FilterError> {
    if reply.body.len() > body_limit {
        return Err(FilterError::LimitExceeded(Limit::Body));
    }
    // 1xx are not final answers (hyper would treat a 101 as an upgrade); HTTP has no
    // status above 599 (RFC 9110, section 15).
    let status = StatusCode::from_u16(reply.status)
        .ok()
        .filter(|s| (200..600).contains(&s.as_u16()))
        .ok_or_else(|| FilterError::Invalid(format!("replied with invalid status {}", reply.status)))?;
    let mut headers = HeaderMap::with_capacity(reply.headers.len());
    for (name, value) in reply.headers {
        let name = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| FilterError::Invalid(format!("replied with invalid header name {name:?}")))?;
        let value = HeaderValue::from_str(&value)
            .map_err(|_| FilterError::Invalid(format!("replied with an invalid value for header {name}")))?;
        // The proxy sets these from what it sends (the one header policy), so a guest's
        // copy, often passed on from a service's answer, is dropped rather than sent.
        if !header_policy::refuses(&name) {
            headers.append(name, value);
        }
    }
    let mut response = Response::new(Body::full(reply.body));
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    Ok(response)
}

/// Turns a guest's request-phase decision into the chain's, resolving a reroute's
/// cluster here, the one place it is resolved, where the guest can be blamed by name:
/// the chain gets this config version's own `Arc<Cluster>` (no allocation, no second
/// lookup).
pub(crate) fn decide_request(
    decision: WitRequestDecision,
    body_limit: usize,
    clusters: &Clusters,
) -> Result<RequestDecision, FilterError> {
    match decision {
        WitRequestDecision::Continue => Ok(RequestDecision::Continue),
        WitRequestDecision::Respond(answer) => reply(answer, body_limit).map(RequestDecision::Respond),
        WitRequestDecision::Reroute(cluster) => match clusters.get(cluster.as_str()) {
            Some(found) => Ok(RequestDecision::Reroute(found.clone())),
            None => Err(FilterError::Invalid(format!("rerouted to unknown cluster {cluster:?}"))),
        },
    }
}

/// Turns a guest's response-phase decision into the chain's.
pub(crate) fn decide_response(
    decision: WitResponseDecision,
    body_limit: usize,
) -> Result<ResponseDecision, FilterError> {
    match decision {
        WitResponseDecision::Continue => Ok(ResponseDecision::Continue),
        WitResponseDecision::Respond(answer) => reply(answer, body_limit).map(ResponseDecision::Respond),
    }
}

impl WasmFilter {
    /// Logs a failure with what only the host knows (phase, trap text), then hands it to
    /// the chain, which counts it in `weft_filter_errors_total` (for every filter kind,
    /// so it is not counted here too) and applies the entry's failure mode.
    fn fail(&self, phase: &'static str, err: FilterError) -> FilterError {
        tracing::warn!(filter = %self.name, phase, kind = err.kind(), error = %err, "wasm filter failed");
        err
    }

    async fn request_phase(
        &self,
        req: &mut FilterRequest,
        ctx: &mut RequestCtx,
    ) -> Result<RequestDecision, FilterError> {
        // Held until the instance is back in the pool (or dropped).
        // The fast paths (a free turn, an idle instance) are plain calls; only a request
        // that must wait or instantiate builds (and boxes) the slower futures.
        let _turn = match self.admission.try_enter() {
            Some(turn) => turn,
            None => Box::pin(self.admission.enter(false)).await?,
        };
        let mut instance = match self.pool.try_acquire() {
            Some(instance) => instance,
            None => Box::pin(self.pool.acquire()).await?,
        };
        let state = instance.store.data_mut();
        std::mem::swap(&mut state.phase.req_head, &mut req.head);
        state.phase.req_body = req.body.take();
        state.enter_phase(ctx);
        limits::start_call(&mut instance.store, self.cpu);
        let Instance {
            store, world, clock, ..
        } = &mut instance;
        let call = world
            .weft_filter_hooks()
            .call_on_request(&mut *store, Resource::new_borrow(0));
        let result = limits::sliced(clock, call).await;
        let state = instance.store.data_mut();
        std::mem::swap(&mut state.phase.req_head, &mut req.head);
        req.body = state.phase.req_body.take();
        state.leave_phase(ctx);
        match result {
            Ok(decision) => {
                self.pool.release(instance);
                decide_request(decision, self.body_limit, &self.clusters)
            }
            Err(e) => Err(limits::classify(&e, instance.store.data_mut())),
        }
    }

    async fn response_phase(
        &self,
        resp: &mut FilterResponse,
        ctx: &mut RequestCtx,
    ) -> Result<ResponseDecision, FilterError> {
        // The fast paths (a free turn, an idle instance) are plain calls; only a request
        // that must wait or instantiate builds (and boxes) the slower futures.
        let _turn = match self.admission.try_enter() {
            Some(turn) => turn,
            None => Box::pin(self.admission.enter(true)).await?,
        };
        let mut instance = match self.pool.try_acquire() {
            Some(instance) => instance,
            None => Box::pin(self.pool.acquire()).await?,
        };
        let state = instance.store.data_mut();
        std::mem::swap(&mut state.phase.resp_head, &mut resp.head);
        state.phase.resp_body = resp.body.take();
        state.enter_phase(ctx);
        limits::start_call(&mut instance.store, self.cpu);
        let Instance {
            store, world, clock, ..
        } = &mut instance;
        let call = world
            .weft_filter_hooks()
            .call_on_response(&mut *store, Resource::new_borrow(0));
        let result = limits::sliced(clock, call).await;
        let state = instance.store.data_mut();
        std::mem::swap(&mut state.phase.resp_head, &mut resp.head);
        resp.body = state.phase.resp_body.take();
        state.leave_phase(ctx);
        match result {
            Ok(decision) => {
                self.pool.release(instance);
                decide_response(decision, self.body_limit)
            }
            Err(e) => Err(limits::classify(&e, instance.store.data_mut())),
        }
    }
}

impl Filter for WasmFilter {
    fn name(&self) -> &str {
        &self.name
    }

    fn on_request<'a>(&'a self, req: &'a mut FilterRequest, ctx: &'a mut RequestCtx) -> RequestFuture<'a> {
        Box::pin(async move { self.request_phase(req, ctx).await.map_err(|e| self.fail("request", e)) })
    }

    fn on_response<'a>(&'a self, resp: &'a mut FilterResponse, ctx: &'a mut RequestCtx) -> ResponseFuture<'a> {
        Box::pin(async move {
            self.response_phase(resp, ctx)
                .await
                .map_err(|e| self.fail("response", e))
        })
    }

    fn has_request_phase(&self) -> bool {
        self.options.phases.contains(Phases::REQUEST)
    }

    fn has_response_phase(&self) -> bool {
        self.options.phases.contains(Phases::RESPONSE)
    }

    fn request_body_limit(&self) -> Option<usize> {
        self.options.request_body.then_some(self.body_limit)
    }

    fn response_body_limit(&self) -> Option<usize> {
        self.options.response_body.then_some(self.body_limit)
    }

    fn plugin(&self) -> Option<&crate::filter::PluginInfo> {
        Some(&self.plugin)
    }
}

#[cfg(test)]
mod tests;
