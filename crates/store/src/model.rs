//! What the store keeps.

/// A conversation's id.
pub type ConversationId = i64;

/// The kind of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Two users; unique per pair.
    Direct,
    /// Any number of users, with an owner and admins.
    Group,
}

impl Kind {
    /// The kind's name, as stored and as clients see it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Direct => "direct",
            Kind::Group => "group",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Kind> {
        match s {
            "direct" => Some(Kind::Direct),
            "group" => Some(Kind::Group),
            _ => None,
        }
    }
}

/// A member's role in a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Any member.
    Member,
    /// May add and remove members.
    Admin,
    /// The group's creator (or who it was handed to): an admin that admins cannot remove.
    Owner,
}

impl Role {
    /// The role's name, as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Member => "member",
            Role::Admin => "admin",
            Role::Owner => "owner",
        }
    }

    pub(crate) fn parse(s: &str) -> Option<Role> {
        match s {
            "member" => Some(Role::Member),
            "admin" => Some(Role::Admin),
            "owner" => Some(Role::Owner),
            _ => None,
        }
    }
}

/// A conversation's row: what every member shares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conversation {
    /// Its id.
    pub id: ConversationId,
    /// Direct or group.
    pub kind: Kind,
    /// A group's title.
    pub title: Option<String>,
    /// A group's owner.
    pub owner: Option<String>,
    /// The sequence number of its last message (0 before the first).
    pub last_seq: u64,
    /// How many members it has.
    pub member_count: u64,
    /// When it was created, in ms since the epoch.
    pub created_ms: i64,
}

/// One member of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// The user.
    pub user: String,
    /// Their role.
    pub role: Role,
    /// The last sequence number they have read (their read watermark).
    pub read_seq: u64,
    /// The last sequence number delivered to one of their devices.
    pub delivered_seq: u64,
    /// The conversation's last sequence number when they joined: they read nothing
    /// before it.
    pub joined_seq: u64,
}

/// A message's body: JSON text, or binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A JSON value, as its text.
    Json(String),
    /// Bytes.
    Binary(Vec<u8>),
}

impl Body {
    /// Its size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Body::Json(s) => s.len(),
            Body::Binary(b) => b.len(),
        }
    }

    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A message to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMessage {
    /// Its conversation.
    pub conversation: ConversationId,
    /// Its author; `None` for a system message.
    pub sender: Option<String>,
    /// The author's id for it: storing the same (sender, cid) twice stores it once.
    pub cid: Option<String>,
    /// Its body.
    pub body: Body,
    /// When it was accepted, in ms since the epoch.
    pub ts_ms: i64,
}

/// A message once stored (or found stored already).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stored {
    /// Its id, unique in the store.
    pub id: i64,
    /// Its sequence number in its conversation.
    pub seq: u64,
    /// When it was accepted.
    pub ts_ms: i64,
    /// It was stored before (the same sender and cid): nothing was written now.
    pub duplicate: bool,
}

/// A stored message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Its id, unique in the store.
    pub id: i64,
    /// Its conversation.
    pub conversation: ConversationId,
    /// Its sequence number there.
    pub seq: u64,
    /// Its author; `None` for a system message.
    pub sender: Option<String>,
    /// The author's id for it.
    pub cid: Option<String>,
    /// Its body.
    pub body: Body,
    /// When it was accepted, in ms since the epoch.
    pub ts_ms: i64,
}
