"""One model trained by many processes (`torchrun`), by concept:

- group.py: the process group (`Cluster`: join and leave, the collectives, `PeerLost` when a peer is lost);
- plan.py: the epoch/merge plan (`Shard`: a rank's chunks of every epoch; `MergeClock`: when it merges);
- merge.py: table merging (`TableSync`, the `dist.merge` modes);
- team.py: the team the train loop sees (`Team`, a process alone; `ClusterTeam`, a rank of a process group).

The scheme is data parallel with periodic merging of the tables (local SGD; what BlazingText's multi-GPU mode
and pWord2Vec's distributed mode do). Every rank holds both full tables and trains them with the ordinary
kernel, whichever it is, on its own share of every epoch, and every `sync_every_words` corpus words (counted
over all ranks) the ranks merge their changes, so all leave a merge with identical tables. The learning rate
follows word2vec's linear decay on the words done by all ranks together.
"""

from sgns.distributed.group import Cluster, PeerLost, Topology, join_cluster, leave_cluster, topology_from_env
from sgns.distributed.merge import TableSync
from sgns.distributed.plan import MergeClock, Shard, plan_shard
from sgns.distributed.team import ClusterTeam, FollowerExit, Team, join_team

__all__ = ["Cluster", "ClusterTeam", "FollowerExit", "MergeClock", "PeerLost", "Shard", "TableSync", "Team",
           "Topology", "join_cluster", "join_team", "leave_cluster", "plan_shard", "topology_from_env"]
