"""A network's channel structure: the groups a compression plan prunes together, their FLOPs, and the plan space.

Below the artefacts: `policysearch.policies.compress.CompressionPlan.apply` needs the groups, and a
plain loop that applies a plan needs nothing above this package.
"""
