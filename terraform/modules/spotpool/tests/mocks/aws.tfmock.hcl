# The mocked AWS provider of the offline plan tests (tests/*.tftest.hcl): the
# account, region and partition the module reads, and an account that has the
# EC2 Spot service-linked role (prerequisites.tftest.hcl overrides that).

mock_data "aws_caller_identity" {
  defaults = { account_id = "123456789012" }
}
mock_data "aws_region" {
  defaults = { name = "us-east-1" }
}
mock_data "aws_partition" {
  defaults = { partition = "aws", dns_suffix = "amazonaws.com" }
}
mock_data "aws_availability_zones" {
  defaults = { names = ["us-east-1a", "us-east-1b"] }
}
mock_data "aws_iam_policy_document" {
  defaults = { json = "{\"Version\":\"2012-10-17\",\"Statement\":[]}" }
}
# The account has the EC2 Spot service-linked role (prerequisites.tftest.hcl: when not).
mock_data "aws_iam_roles" {
  defaults = { arns = ["arn:aws:iam::123456789012:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot"] }
}
