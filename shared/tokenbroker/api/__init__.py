"""The IAM API: its wire contract, the one table of its operations, and the two transports
(HTTP routes, direct Lambda invoke) that serve that table.

Empty on purpose: the consumer SDK imports ``tokenbroker.api.contract`` and must not pull in
Powertools or the AWS side through this package.
"""
