"""``riskctl alerts``: deliver the job's alerts (and REVIEW decisions) to reviewers.

Pure parts, importing neither Kafka nor HTTP clients: :mod:`.model` (parse a record into an
:class:`~riskctl.alerts.model.AlertItem`), :mod:`.settings` (the routing/channels file), :mod:`.routing`,
:mod:`.templates`, :mod:`.ratelimit` (limits and digests), :mod:`.ledger` (delivered ids, offsets to commit),
:mod:`.signing` (DingTalk) and :mod:`.messages` (the request of each channel kind). I/O lives in
:mod:`.senders` (HTTP, SMTP) and :mod:`.dispatcher` (Kafka, one worker per channel). See docs/alerts.md.
"""
