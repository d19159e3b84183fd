//! The RPCs that dispatch an action (send, edit, approve, cancel, ...) all read the same way:
//! parse the context, the action and how to answer, route to the context's node, apply, and
//! convert the state the action produced. Each handler only says how its action is parsed.

use ctxd_proto::v1 as pb;
use tonic::{Request, Response, Status};

use super::route::Call;
use super::{ContextApi, Limits, caller, convert, deadline, parse_context_id, request};
use crate::auth::Scope;
use crate::cluster::Retry;
use crate::runtime::Action;

/// What every action request says besides its action.
pub(super) trait ActionRequest: prost::Message + Clone + Default + Send + Sync + 'static {
    fn context_id(&self) -> &str;
    /// Answer once the context rests, not once the action is saved.
    fn wait(&self) -> bool {
        false
    }
    fn view(&self) -> i32;
}

macro_rules! action_requests {
    (waits: $($waits:ty),*; answers at once: $($at_once:ty),*) => {
        $(impl ActionRequest for $waits {
            fn context_id(&self) -> &str { &self.context_id }
            fn wait(&self) -> bool { self.wait }
            fn view(&self) -> i32 { self.view }
        })*
        $(impl ActionRequest for $at_once {
            fn context_id(&self) -> &str { &self.context_id }
            fn view(&self) -> i32 { self.view }
        })*
    };
}

action_requests!(
    waits: pb::SendMessageRequest, pb::EditMessageRequest, pb::RegenerateReplyRequest, pb::ApproveToolsRequest,
        pb::CancelRunRequest, pb::RetryRunRequest, pb::SubmitToolResultRequest;
    answers at once: pb::UpdateContextRequest, pb::SwitchBranchRequest
);

impl ContextApi {
    /// Serves an action RPC: `action` parses the action (after the context and the view, so
    /// the first thing wrong is the one reported), `answer` wraps the state it produced.
    pub(super) async fn dispatch<Q: ActionRequest, R>(
        &self,
        request: Request<Q>,
        action: impl FnOnce(Q, &Limits) -> Result<Action, Status>,
        answer: impl FnOnce(pb::ContextState) -> R,
    ) -> Result<Response<R>, Status>
    where
        R: prost::Message + Default + Send + Sync + 'static,
    {
        let who = caller::caller(&request, Scope::Write)?;
        let (call, message): (Call<Q>, Q) = self.call(request, Retry::IfNeverSent);
        let key = caller::key(&who, parse_context_id(message.context_id())?);
        let (wait, view) = (message.wait(), request::view(message.view())?);
        let action = action(message, &self.limits)?;
        let deadline = deadline::from_metadata(&call.metadata);
        let local = async || {
            let ctx = self.contexts.act(&key, action, wait, deadline).await?;
            Ok(answer(convert::context_state_view(&ctx, view, None)))
        };
        self.routed(&call, &key, local).await
    }
}
