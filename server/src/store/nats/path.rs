//! Reading a context's active path from what a NATS layout holds (both layouts store the
//! path's shape and each parent's children alike).

use std::sync::Arc;

use crate::domain::{Child, Message, NodeId, Seq, Sibling};
use crate::store::codec::{self, StoredChildren, StoredPath};
use crate::store::error::{Error, Result};

/// The nodes of the active path of `message_count` messages that `path` describes, in order.
pub fn nodes(path: Option<&StoredPath>, message_count: u64) -> Vec<NodeId> {
    let segments = codec::segments_from_stored(path);
    let length = Seq::new(message_count);
    let mut nodes = Vec::with_capacity(length.index());
    for (i, segment) in segments.iter().enumerate() {
        let end = segments.get(i + 1).map_or(length, |next| next.seq);
        nodes.extend((0..segment.seq.until(end)).map(|k| segment.node.plus(k)));
    }
    nodes
}

/// The versions at each depth of `path` that has some, read with `children` (a parent's
/// list), for the loaded `messages` of the path.
pub async fn forks<F, Fut>(
    messages: &[Message],
    path: Option<StoredPath>,
    children: F,
) -> Result<Vec<(Seq, Arc<[Sibling]>)>>
where
    F: Fn(Option<NodeId>) -> Fut,
    Fut: Future<Output = Result<StoredChildren>>,
{
    let depths = path.map(|p| p.forks).unwrap_or_default();
    futures::future::try_join_all(depths.into_iter().map(Seq::new).map(|seq| {
        let list = children(codec::parent_at(messages, seq));
        async move {
            let siblings = list.await?.children.into_iter().map(|c| {
                Ok(Sibling {
                    node: NodeId::new(c.node),
                    id: codec::message_id(&c.id, format_args!("child {}", c.node))?,
                })
            });
            Ok::<_, Error>((seq, siblings.collect::<Result<Arc<[Sibling]>>>()?))
        }
    }))
    .await
}

/// A stored list of children as the tree reader takes it.
pub fn children(list: StoredChildren) -> Result<Vec<Child>> {
    list.children
        .into_iter()
        .map(|c| {
            let id = codec::message_id(&c.id, format_args!("child {}", c.node))?;
            Ok(Child { node: NodeId::new(c.node), id, active_at: c.active_at })
        })
        .collect()
}
