//! The gRPC edge: each handler validates its request, converts it to domain terms, hands it
//! to the runtime, and converts the answer back.

mod convert;
mod deadline;
mod request;
mod status;

use std::pin::Pin;

use ctxd_proto::v1 as pb;
use ctxd_proto::v1::context_service_server::ContextService;
use futures::Stream;
use tonic::{Request, Response, Status};

pub use request::Limits;

use crate::fsm::Command;
use crate::runtime::{Contexts, Gone, Slot};
use pb::watch_state_response::Kind;

pub struct ContextApi {
    contexts: Contexts,
    limits: Limits,
}

impl ContextApi {
    pub fn new(contexts: Contexts, limits: Limits) -> Self {
        Self { contexts, limits }
    }

    async fn act(
        &self,
        context_id: &str,
        command: Command,
        wait: bool,
        metadata: &tonic::metadata::MetadataMap,
    ) -> Result<Option<pb::ContextState>, Status> {
        let id = request::context_id("context_id", context_id)?;
        let deadline = deadline::from_metadata(metadata);
        let ctx = self.contexts.act(id, command, wait, deadline).await?;
        Ok(Some(convert::context_state(&ctx)))
    }
}

type WatchStateStream = Pin<Box<dyn Stream<Item = Result<pb::WatchStateResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ContextService for ContextApi {
    async fn create_context(
        &self,
        request: Request<pb::CreateContextRequest>,
    ) -> Result<Response<pb::CreateContextResponse>, Status> {
        let pb::CreateContextRequest { context_id, title, config } = request.into_inner();
        let id = request::optional_context_id("context_id", &context_id)?;
        let title = request::title(title)?;
        let config = request::config(config, &self.limits)?;
        let ctx = self.contexts.create(id, title, config).await?;
        Ok(Response::new(pb::CreateContextResponse { state: Some(convert::context_state(&ctx)) }))
    }

    async fn get_state(&self, request: Request<pb::GetStateRequest>) -> Result<Response<pb::GetStateResponse>, Status> {
        let pb::GetStateRequest { context_id } = request.into_inner();
        let id = request::context_id("context_id", &context_id)?;
        let ctx = self.contexts.get(id).await?;
        Ok(Response::new(pb::GetStateResponse { state: Some(convert::context_state(&ctx)) }))
    }

    async fn list_contexts(
        &self,
        request: Request<pb::ListContextsRequest>,
    ) -> Result<Response<pb::ListContextsResponse>, Status> {
        let pb::ListContextsRequest { page_size, page_token } = request.into_inner();
        let limit = request::page_size(page_size)?;
        let cursor = request::page_token(&page_token)?;
        let (summaries, next) = self.contexts.list(cursor, limit).await?;
        Ok(Response::new(pb::ListContextsResponse {
            contexts: summaries.iter().map(convert::summary).collect(),
            next_page_token: request::next_page_token(next),
        }))
    }

    async fn delete_context(
        &self,
        request: Request<pb::DeleteContextRequest>,
    ) -> Result<Response<pb::DeleteContextResponse>, Status> {
        let pb::DeleteContextRequest { context_id } = request.into_inner();
        let id = request::context_id("context_id", &context_id)?;
        self.contexts.delete(id).await?;
        Ok(Response::new(pb::DeleteContextResponse {}))
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        let pb::SendMessageRequest { context_id, content, client_message_id, expected_revision, wait } = message;
        let command = Command::Send {
            content: request::content(content, &self.limits)?,
            client_message_id: request::client_message_id(client_message_id)?,
            expected_revision,
        };
        let state = self.act(&context_id, command, wait, &metadata).await?;
        Ok(Response::new(pb::SendMessageResponse { state }))
    }

    async fn approve_tools(
        &self,
        request: Request<pb::ApproveToolsRequest>,
    ) -> Result<Response<pb::ApproveToolsResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        let pb::ApproveToolsRequest { context_id, approved_tool_call_ids, denied_tool_call_ids, wait } = message;
        let command = Command::Approve {
            approved: request::tool_call_ids("approved_tool_call_ids", approved_tool_call_ids)?,
            denied: request::tool_call_ids("denied_tool_call_ids", denied_tool_call_ids)?,
        };
        let state = self.act(&context_id, command, wait, &metadata).await?;
        Ok(Response::new(pb::ApproveToolsResponse { state }))
    }

    async fn cancel_run(
        &self,
        request: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::CancelRunResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        let pb::CancelRunRequest { context_id, wait } = message;
        let state = self.act(&context_id, Command::Cancel, wait, &metadata).await?;
        Ok(Response::new(pb::CancelRunResponse { state }))
    }

    async fn retry_run(&self, request: Request<pb::RetryRunRequest>) -> Result<Response<pb::RetryRunResponse>, Status> {
        let (metadata, _, message) = request.into_parts();
        let pb::RetryRunRequest { context_id, wait } = message;
        let state = self.act(&context_id, Command::Retry, wait, &metadata).await?;
        Ok(Response::new(pb::RetryRunResponse { state }))
    }

    type WatchStateStream = WatchStateStream;

    /// Sends the current state, then a snapshot after every change. (Fine-grained events and
    /// resuming from a revision come with the live-state work.)
    async fn watch_state(
        &self,
        request: Request<pb::WatchStateRequest>,
    ) -> Result<Response<Self::WatchStateStream>, Status> {
        let pb::WatchStateRequest { context_id, from_revision: _ } = request.into_inner();
        let id = request::context_id("context_id", &context_id)?;
        let updates = self.contexts.watch(id).await?;
        let context_id = id.to_string();
        // (receiver, first item?, ended?)
        let stream = futures::stream::unfold((updates, true, false), move |(mut updates, first, ended)| {
            let context_id = context_id.clone();
            async move {
                if ended || (!first && updates.changed().await.is_err()) {
                    return None;
                }
                let slot = updates.borrow_and_update().clone();
                let (revision, kind, ended) = match slot {
                    Slot::Live(ctx) => (ctx.revision, Kind::Snapshot(convert::context_state(&ctx)), false),
                    Slot::Gone(Gone::Deleted | Gone::NotFound) => {
                        (0, Kind::ContextDeleted(pb::ContextDeleted {}), true)
                    }
                    Slot::Gone(Gone::Stopped(_)) | Slot::Loading => return None,
                };
                let response = pb::WatchStateResponse { context_id, revision, kind: Some(kind) };
                Some((Ok(response), (updates, false, ended)))
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
