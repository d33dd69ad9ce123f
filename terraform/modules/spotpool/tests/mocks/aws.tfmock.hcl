# The mocked AWS provider of the offline plan tests (tests/*.tftest.hcl): the
# account, region and partition the module reads, and an account that has the
# EC2 Spot service-linked role (prerequisites.tftest.hcl overrides that); ARN-shaped
# values for the runs that apply.

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

# ARN-shaped values for the resources whose ARNs others validate, for the runs
# that "apply" (shards.tftest.hcl); every instance of a resource gets the same one.
mock_resource "aws_lb" {
  defaults = {
    arn      = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/spotpool/0123456789abcdef"
    dns_name = "spotpool-123456789.us-east-1.elb.amazonaws.com"
    zone_id  = "Z35SXDOTRQ7X7K"
  }
}
mock_resource "aws_lb_listener" {
  defaults = { arn = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/spotpool/0123456789abcdef/fedcba9876543210" }
}
mock_resource "aws_iam_instance_profile" {
  defaults = { arn = "arn:aws:iam::123456789012:instance-profile/spotpool-instance" }
}
mock_resource "aws_iam_role" {
  defaults = { arn = "arn:aws:iam::123456789012:role/spotpool-instance" }
}
mock_resource "aws_iam_policy" {
  defaults = { arn = "arn:aws:iam::123456789012:policy/spotpool-daemon" }
}
mock_resource "aws_sqs_queue" {
  defaults = {
    arn = "arn:aws:sqs:us-east-1:123456789012:spotpool-interruptions"
    url = "https://sqs.us-east-1.amazonaws.com/123456789012/spotpool-interruptions"
  }
}
mock_resource "aws_cloudwatch_event_rule" {
  defaults = { arn = "arn:aws:events:us-east-1:123456789012:rule/spotpool-state-change" }
}
mock_resource "aws_acm_certificate" {
  defaults = { arn = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555" }
}
mock_resource "aws_acm_certificate_validation" {
  defaults = { certificate_arn = "arn:aws:acm:us-east-1:123456789012:certificate/11111111-2222-3333-4444-555555555555" }
}
