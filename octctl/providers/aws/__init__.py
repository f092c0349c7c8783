"""The AWS provider: nodes are EC2 instances; the pieces here are plain boto3 calls, imported lazily."""
