//! The gRPC edge: each handler validates its request, converts it to domain terms, hands it
//! to the runtime, and converts the answer back.

mod caller;
mod convert;
mod deadline;
mod dispatch;
mod page_token;
mod request;
mod route;
mod status;
mod watch;

use std::sync::Arc;

use ctxd_proto::v1 as pb;
use ctxd_proto::v1::context_service_server::ContextService;
use tonic::{Request, Response, Status};

pub use request::Limits;

use crate::auth::Scope;
use crate::cluster::{Forwarder, Retry};
use crate::domain::{ContextId, ToolDefinition, ToolPolicy};
use crate::fsm::Command;
use crate::runtime::{Action, Contexts, PathStart};
use crate::telemetry::names;

/// The `context_id` of a request, named on the call's span (when tracing is on).
fn parse_context_id(value: &str) -> Result<ContextId, Status> {
    let id = request::context_id("context_id", value)?;
    traced(id);
    Ok(id)
}

fn traced(id: ContextId) {
    tracing::Span::current().record("context_id", tracing::field::display(id));
}

pub struct ContextApi {
    contexts: Contexts,
    limits: Limits,
    /// The built-in tools, for ListTools.
    tools: Vec<(ToolDefinition, ToolPolicy)>,
    /// On a cluster: sends calls on to the node that runs their context.
    forwarder: Option<Arc<Forwarder>>,
}

impl ContextApi {
    pub fn new(
        contexts: Contexts,
        limits: Limits,
        tools: Vec<(ToolDefinition, ToolPolicy)>,
        forwarder: Option<Arc<Forwarder>>,
    ) -> Self {
        Self { contexts, limits, tools, forwarder }
    }
}

#[tonic::async_trait]
impl ContextService for ContextApi {
    async fn create_context(
        &self,
        request: Request<pb::CreateContextRequest>,
    ) -> Result<Response<pb::CreateContextResponse>, Status> {
        let who = caller::caller(&request, Scope::Write)?;
        let pb::CreateContextRequest { context_id, title, config } = request.into_inner();
        let id = request::optional_id("context_id", &context_id)?;
        let title = request::title(title)?;
        let config = request::config(config, &self.limits)?;
        let ctx = self.contexts.create(who.tenant, who.subject, id, title, config).await?;
        traced(ctx.id);
        Ok(Response::new(pb::CreateContextResponse { state: Some(convert::context_state(&ctx)) }))
    }

    async fn fork_context(
        &self,
        request: Request<pb::ForkContextRequest>,
    ) -> Result<Response<pb::ForkContextResponse>, Status> {
        let who = caller::caller(&request, Scope::Write)?;
        let (call, message) = self.call(request, Retry::IfNeverSent);
        let pb::ForkContextRequest { context_id, message_id, title, new_context_id } = message;
        let source = caller::key(&who, parse_context_id(&context_id)?);
        let through = request::optional_id("message_id", &message_id)?;
        let id = request::optional_id("new_context_id", &new_context_id)?;
        let title = request::title(title)?;
        // Served where the source runs: it reads the source as that node holds it.
        let local = async || {
            let ctx = self.contexts.fork(&source, through, who.tenant.clone(), who.subject.clone(), id, title).await?;
            Ok(pb::ForkContextResponse { state: Some(convert::context_state(&ctx)) })
        };
        self.routed(&call, &source, local).await
    }

    async fn get_state(&self, request: Request<pb::GetStateRequest>) -> Result<Response<pb::GetStateResponse>, Status> {
        let who = caller::caller(&request, Scope::Read)?;
        let (call, message) = self.call(request, Retry::Safe);
        let pb::GetStateRequest { context_id, view, message_limit } = message;
        let key = caller::key(&who, parse_context_id(&context_id)?);
        let view = request::view(view)?;
        let limit = request::message_limit(message_limit);
        let local = async || {
            let ctx = self.contexts.get(&key).await?;
            Ok(pb::GetStateResponse { state: Some(convert::context_state_view(&ctx, view, limit)) })
        };
        self.routed(&call, &key, local).await
    }

    async fn list_contexts(
        &self,
        request: Request<pb::ListContextsRequest>,
    ) -> Result<Response<pb::ListContextsResponse>, Status> {
        let who = caller::caller(&request, Scope::Read)?;
        let pb::ListContextsRequest { page_size, page_token } = request.into_inner();
        let limit = request::page_size(page_size)?;
        let after = page_token::decode(&page_token)?;
        let (summaries, next) = self.contexts.list(&who.tenant, after, limit).await?;
        Ok(Response::new(pb::ListContextsResponse {
            contexts: summaries.iter().map(convert::summary).collect(),
            next_page_token: page_token::encode(next),
        }))
    }

    async fn update_context(
        &self,
        request: Request<pb::UpdateContextRequest>,
    ) -> Result<Response<pb::UpdateContextResponse>, Status> {
        let action = |m: pb::UpdateContextRequest, limits: &Limits| {
            Ok(Action::from(Command::Update {
                title: m.title.map(request::title).transpose()?,
                config: m.config.map(|c| request::config(Some(c), limits)).transpose()?,
                expected_revision: m.expected_revision,
            }))
        };
        self.dispatch(request, action, |state| pb::UpdateContextResponse { state: Some(state) }).await
    }

    async fn delete_context(
        &self,
        request: Request<pb::DeleteContextRequest>,
    ) -> Result<Response<pb::DeleteContextResponse>, Status> {
        let who = caller::caller(&request, Scope::Write)?;
        let (call, message) = self.call(request, Retry::IfNeverSent);
        let pb::DeleteContextRequest { context_id } = message;
        let key = caller::key(&who, parse_context_id(&context_id)?);
        let local = async || {
            self.contexts.delete(&key).await?;
            Ok(pb::DeleteContextResponse {})
        };
        self.routed(&call, &key, local).await
    }

    async fn send_message(
        &self,
        request: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let action = |m: pb::SendMessageRequest, limits: &Limits| {
            Ok(Action::from(Command::Send {
                content: request::content(m.content, limits)?,
                client_message_id: request::client_message_id(m.client_message_id)?,
                expected_revision: m.expected_revision,
                on_busy: request::on_busy(m.on_busy)?,
            }))
        };
        self.dispatch(request, action, |state| pb::SendMessageResponse { state: Some(state) }).await
    }

    async fn edit_message(
        &self,
        request: Request<pb::EditMessageRequest>,
    ) -> Result<Response<pb::EditMessageResponse>, Status> {
        let action = |m: pb::EditMessageRequest, limits: &Limits| {
            Ok(Action::from(Command::Edit {
                message_id: request::message_id(&m.message_id)?,
                content: request::content(m.content, limits)?,
                client_message_id: request::client_message_id(m.client_message_id)?,
                expected_revision: m.expected_revision,
            }))
        };
        self.dispatch(request, action, |state| pb::EditMessageResponse { state: Some(state) }).await
    }

    async fn regenerate_reply(
        &self,
        request: Request<pb::RegenerateReplyRequest>,
    ) -> Result<Response<pb::RegenerateReplyResponse>, Status> {
        let action = |m: pb::RegenerateReplyRequest, _: &Limits| {
            let message_id = request::optional_id("message_id", &m.message_id)?;
            Ok(Action::from(Command::Regenerate { message_id, expected_revision: m.expected_revision }))
        };
        self.dispatch(request, action, |state| pb::RegenerateReplyResponse { state: Some(state) }).await
    }

    async fn switch_branch(
        &self,
        request: Request<pb::SwitchBranchRequest>,
    ) -> Result<Response<pb::SwitchBranchResponse>, Status> {
        let action = |m: pb::SwitchBranchRequest, _: &Limits| {
            let message_id = request::message_id(&m.message_id)?;
            Ok(Action::Switch { message_id, expected_revision: m.expected_revision })
        };
        self.dispatch(request, action, |state| pb::SwitchBranchResponse { state: Some(state) }).await
    }

    async fn list_messages(
        &self,
        request: Request<pb::ListMessagesRequest>,
    ) -> Result<Response<pb::ListMessagesResponse>, Status> {
        let who = caller::caller(&request, Scope::Read)?;
        let (call, message) = self.call(request, Retry::Safe);
        let pb::ListMessagesRequest { context_id, parent_id, page_size, page_token } = message;
        let key = caller::key(&who, parse_context_id(&context_id)?);
        let parent = request::optional_id("parent_id", &parent_id)?;
        let limit = request::page_size(page_size)?;
        let after = page_token::decode_node(&page_token)?;
        // Served where the context runs: only that node's store has finished writing its tree.
        let local = async || {
            let (messages, next) = self.contexts.children(&key, parent, after, limit).await?;
            Ok(pb::ListMessagesResponse {
                messages: messages.iter().map(|(m, versions)| convert::message(m, *versions)).collect(),
                next_page_token: page_token::encode_node(next),
            })
        };
        self.routed(&call, &key, local).await
    }

    async fn list_path_messages(
        &self,
        request: Request<pb::ListPathMessagesRequest>,
    ) -> Result<Response<pb::ListPathMessagesResponse>, Status> {
        let who = caller::caller(&request, Scope::Read)?;
        let (call, message) = self.call(request, Retry::Safe);
        let pb::ListPathMessagesRequest { context_id, before_message_id, page_size, page_token } = message;
        let key = caller::key(&who, parse_context_id(&context_id)?);
        let before = request::optional_id("before_message_id", &before_message_id)?;
        let limit = request::page_size(page_size)?;
        let start = match (page_token::decode_path(&page_token)?, before) {
            (Some(point), _) => PathStart::Above(point),
            (None, Some(id)) => PathStart::Before(id),
            (None, None) => PathStart::End,
        };
        let local = async || {
            let (messages, next) = self.contexts.path_page(&key, start, limit).await?;
            Ok(pb::ListPathMessagesResponse {
                messages: messages.iter().map(|(m, versions)| convert::message(m, *versions)).collect(),
                next_page_token: page_token::encode_path(next),
            })
        };
        self.routed(&call, &key, local).await
    }

    async fn approve_tools(
        &self,
        request: Request<pb::ApproveToolsRequest>,
    ) -> Result<Response<pb::ApproveToolsResponse>, Status> {
        let action = |m: pb::ApproveToolsRequest, _: &Limits| {
            Ok(Action::from(Command::Approve {
                approved: request::tool_call_ids("approved_tool_call_ids", m.approved_tool_call_ids)?,
                denied: request::tool_call_ids("denied_tool_call_ids", m.denied_tool_call_ids)?,
            }))
        };
        self.dispatch(request, action, |state| pb::ApproveToolsResponse { state: Some(state) }).await
    }

    async fn cancel_run(
        &self,
        request: Request<pb::CancelRunRequest>,
    ) -> Result<Response<pb::CancelRunResponse>, Status> {
        let action = |_: pb::CancelRunRequest, _: &Limits| Ok(Action::from(Command::Cancel));
        self.dispatch(request, action, |state| pb::CancelRunResponse { state: Some(state) }).await
    }

    async fn retry_run(&self, request: Request<pb::RetryRunRequest>) -> Result<Response<pb::RetryRunResponse>, Status> {
        let action = |_: pb::RetryRunRequest, _: &Limits| Ok(Action::from(Command::Retry));
        self.dispatch(request, action, |state| pb::RetryRunResponse { state: Some(state) }).await
    }

    async fn submit_tool_result(
        &self,
        request: Request<pb::SubmitToolResultRequest>,
    ) -> Result<Response<pb::SubmitToolResultResponse>, Status> {
        let action = |m: pb::SubmitToolResultRequest, limits: &Limits| {
            let call_id = request::tool_call_ids("tool_call_id", vec![m.tool_call_id])?.remove(0);
            let result = request::tool_result(m.outcome, limits)?;
            Ok(Action::from(Command::SubmitToolResult { call_id, result }))
        };
        let answer = |state| {
            metrics::counter!(names::EXTERNAL_RESULTS).increment(1);
            pb::SubmitToolResultResponse { state: Some(state) }
        };
        self.dispatch(request, action, answer).await
    }

    async fn list_tools(
        &self,
        request: Request<pb::ListToolsRequest>,
    ) -> Result<Response<pb::ListToolsResponse>, Status> {
        caller::caller(&request, Scope::Read)?;
        let pb::ListToolsRequest {} = request.into_inner();
        let tools = self.tools.iter().map(|(definition, policy)| convert::tool_info(definition, *policy)).collect();
        Ok(Response::new(pb::ListToolsResponse { tools }))
    }

    type WatchStateStream = watch::ResponseStream<pb::WatchStateResponse>;

    async fn watch_state(
        &self,
        request: Request<pb::WatchStateRequest>,
    ) -> Result<Response<Self::WatchStateStream>, Status> {
        let who = caller::caller(&request, Scope::Read)?;
        let credential = caller::credential(&request)?;
        let (metadata, _, message) = request.into_parts();
        let pb::WatchStateRequest { context_id, from_revision, message_limit } = message;
        let key = caller::key(&who, parse_context_id(&context_id)?);
        let from = watch::WatchFrom { revision: from_revision, message_limit };
        let stream = match &self.forwarder {
            None => watch::state(&self.contexts, &key, from).await?,
            Some(forwarder) => watch::anywhere(&self.contexts, forwarder, key, from, metadata).await?,
        };
        Ok(Response::new(watch::until_lapsed(stream, credential)))
    }

    type WatchContextsStream = watch::ResponseStream<pb::WatchContextsResponse>;

    async fn watch_contexts(
        &self,
        request: Request<pb::WatchContextsRequest>,
    ) -> Result<Response<Self::WatchContextsStream>, Status> {
        let who = caller::caller(&request, Scope::Read)?;
        let credential = caller::credential(&request)?;
        let pb::WatchContextsRequest { page_size } = request.into_inner();
        let limit = request::page_size(page_size)?;
        let stream = watch::list(&self.contexts, who.tenant, limit).await?;
        Ok(Response::new(watch::until_lapsed(stream, credential)))
    }
}
