"""Genesis and afterlife on AWS: the CLI builds the base and the leader; the leader does the rest.

Genesis (:mod:`.genesis`) creates the base infrastructure (``octctl.providers.aws.infra``, kept
up to date on every deploy by :mod:`.base`), stores the cluster's secrets in SSM, and runs the
leader instance, whose cloud-init installs the same oct version and starts ``oct-ctl``. Every id
goes into the state record's ledger (:mod:`.ledger`) the moment it exists, and every step finds
what an earlier, interrupted run made (by ledger id, tags or client token), so re-running ``oct
deploy`` after a failure finishes genesis and ``oct destroy`` removes whatever was made.

Afterlife (:mod:`.teardown`) terminates every instance of the cluster (followers first through the
leader, when it answers), then the base infrastructure in reverse order, the secrets, the image
repositories and the hosted zone oct created; it works from the record and the tags even with the
leader gone. :mod:`.cluster` is the ``ClusterProvider`` that ties these together.
"""
