//! Why an admission was refused, as a pool counts it: a value both the
//! core (which counts) and the wire (which names each reason with its
//! error code, `proto::ErrorCode::DENIALS`) share.

/// Why an admission (acquire, checkout, activation) was refused, besides
/// the quota, which the session table counts itself (`rejected`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denial {
    /// The member is at their cap in the pool.
    UserLimit,
    /// The pool's queue (or the connection's share of waits) is full.
    QueueFull,
    /// No seat came within the wait.
    QueueTimeout,
    /// The machine is not registered in the pool.
    MachineNotRegistered,
    /// The org's subscription has ended.
    SubscriptionExpired,
    /// The member holds no grant for the KSE pool.
    NotLicensed,
    /// The member's node-locked license is bound to another machine.
    AlreadyActivated,
    /// The pool holds as many sessions carrying one of the runner's labels
    /// as that label's cap allows.
    LabelLimit,
}

impl Denial {
    /// Every reason, in the order counts are kept and stored.
    pub const ALL: [Denial; 8] = [
        Denial::UserLimit,
        Denial::QueueFull,
        Denial::QueueTimeout,
        Denial::MachineNotRegistered,
        Denial::SubscriptionExpired,
        Denial::NotLicensed,
        Denial::AlreadyActivated,
        Denial::LabelLimit,
    ];
}
