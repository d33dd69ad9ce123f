# Offline plans of the module with a mocked AWS provider (`terraform test`, run by
# scripts/terraform-check.sh): network_mode, the private subnet mode of network.tf
# and endpoints.tf (no public IPv4 on the pool instances, VPC endpoints for what
# they call, the endpoints' fixed cost in daemon_env). Nothing of it is applied
# against moto.
#
# The network's ids are fixed here and known during the plan (override_during),
# so that the runs can check which subnets and route tables things are in.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan

  override_resource {
    target = aws_vpc.this[0]
    values = { id = "vpc-0c0ffee" }
  }
  override_resource {
    target = aws_subnet.public[0]
    values = { id = "subnet-0pa" }
  }
  override_resource {
    target = aws_subnet.public[1]
    values = { id = "subnet-0pb" }
  }
  override_resource {
    target = aws_subnet.private[0]
    values = { id = "subnet-0qa" }
  }
  override_resource {
    target = aws_subnet.private[1]
    values = { id = "subnet-0qb" }
  }
  override_resource {
    target = aws_subnet.private[2]
    values = { id = "subnet-0qc" }
  }
  override_resource {
    target = aws_route_table.public[0]
    values = { id = "rtb-0public" }
  }
  override_resource {
    target = aws_route_table.private[0]
    values = { id = "rtb-0private" }
  }
  override_resource {
    target = aws_security_group.instances
    values = { id = "sg-0instances" }
  }
  override_resource {
    target = aws_security_group.endpoints[0]
    values = { id = "sg-0endpoints" }
  }
}

variables {
  create_network  = true
  ami_id          = "ami-0123456789abcdef0"
  container_image = "123456789012.dkr.ecr.us-east-1.amazonaws.com/openclaw:2026.9.6"
}

run "the_default_public_network_has_no_endpoints_and_public_addresses" {
  command = plan

  assert {
    condition     = length(aws_subnet.private) == 0 && length(aws_route_table.private) == 0 && alltrue([for s in aws_subnet.public : s.map_public_ip_on_launch])
    error_message = "the public mode must keep the public subnets of earlier versions, and no private ones"
  }
  assert {
    condition     = local.subnet_ids == tolist(["subnet-0pa", "subnet-0pb"]) && local.alb_subnet_ids == tolist(["subnet-0pa", "subnet-0pb"]) && aws_lb.this[0].subnets == toset(["subnet-0pa", "subnet-0pb"])
    error_message = "the pool and the ALBs must share the public subnets"
  }
  assert {
    condition     = length(aws_vpc_endpoint.interface) == 0 && length(aws_vpc_endpoint.s3) == 0 && length(aws_security_group.endpoints) == 0
    error_message = "the public mode created VPC endpoints"
  }
  assert {
    condition     = output.vpc_endpoints == {} && output.vpc_endpoint_hourly_cost_usd == 0
    error_message = "the public mode has no endpoint cost: ${jsonencode(output.vpc_endpoints)}, ${output.vpc_endpoint_hourly_cost_usd}"
  }
  assert {
    condition     = local.daemon_env["SPOTPOOL_PUBLIC_IPV4"] == "true" && local.daemon_env["SPOTPOOL_NETWORK_FIXED_DOLLARS_PER_HOUR"] == "0"
    error_message = "daemon_env: SPOTPOOL_PUBLIC_IPV4=${local.daemon_env["SPOTPOOL_PUBLIC_IPV4"]}, SPOTPOOL_NETWORK_FIXED_DOLLARS_PER_HOUR=${local.daemon_env["SPOTPOOL_NETWORK_FIXED_DOLLARS_PER_HOUR"]}"
  }
}

run "the_private_mode_puts_the_pool_in_private_subnets_behind_endpoints" {
  command = plan

  variables {
    network_mode = "private"
  }

  # No public IPv4: the instances' subnets map none and route nowhere out, and the
  # templates add no network interface (which could only ask for one).
  assert {
    condition     = length(aws_subnet.private) == 2 && alltrue([for s in aws_subnet.private : !s.map_public_ip_on_launch])
    error_message = "no private subnet per zone, or one maps public IPs"
  }
  assert {
    condition     = local.subnet_ids == tolist(["subnet-0qa", "subnet-0qb"]) && local.daemon_env["SUBNET_IDS"] == "subnet-0qa,subnet-0qb"
    error_message = "the daemon does not launch into the private subnets: ${jsonencode(local.subnet_ids)}"
  }
  assert {
    condition     = [for s in aws_subnet.private : s.cidr_block] == ["10.0.128.0/20", "10.0.144.0/20"] && [for s in aws_subnet.private : s.availability_zone] == ["us-east-1a", "us-east-1b"]
    error_message = "private subnets: ${jsonencode([for s in aws_subnet.private : [s.cidr_block, s.availability_zone]])}"
  }
  assert {
    condition     = [for a in aws_route_table_association.private : [a.subnet_id, a.route_table_id]] == [["subnet-0qa", "rtb-0private"], ["subnet-0qb", "rtb-0private"]]
    error_message = "the private subnets are not on the private route table"
  }
  assert {
    condition     = length(aws_route.internet) == 1 && aws_route.internet[0].route_table_id == "rtb-0public" && [for a in aws_route_table_association.public : a.subnet_id] == ["subnet-0pa", "subnet-0pb"]
    error_message = "the internet route must stay on the public route table only"
  }
  assert {
    condition     = length([for r in aws_route.internet : r if r.route_table_id == "rtb-0private"]) == 0
    error_message = "the private route table has a route out"
  }
  assert {
    condition     = alltrue([for key, template in aws_launch_template.pool : length(template.network_interfaces) == 0])
    error_message = "a launch template has a network interface of its own"
  }
  assert {
    condition     = output.public_ipv4 == false && local.daemon_env["SPOTPOOL_PUBLIC_IPV4"] == "false"
    error_message = "the daemon would count a public IPv4 address per instance"
  }

  # The ALBs stay in the public subnets.
  assert {
    condition     = aws_lb.this[0].subnets == toset(["subnet-0pa", "subnet-0pb"]) && !aws_lb.this[0].internal
    error_message = "the ALB is not internet-facing in the public subnets: ${jsonencode(aws_lb.this[0].subnets)}"
  }
  assert {
    condition     = output.alb_subnet_ids == tolist(["subnet-0pa", "subnet-0pb"]) && alltrue([for s in aws_subnet.public : s.map_public_ip_on_launch])
    error_message = "alb_subnet_ids is not the public subnets"
  }

  # The interface endpoints: one per service, in every private subnet, private DNS on.
  assert {
    condition     = keys(aws_vpc_endpoint.interface) == ["ec2messages", "ecr.api", "ecr.dkr", "secretsmanager", "ssm", "ssmmessages"]
    error_message = "interface endpoints: ${jsonencode(keys(aws_vpc_endpoint.interface))}"
  }
  assert {
    condition = alltrue([for service, endpoint in aws_vpc_endpoint.interface : (
      endpoint.vpc_endpoint_type == "Interface" && endpoint.private_dns_enabled &&
      endpoint.vpc_id == "vpc-0c0ffee" &&
      endpoint.subnet_ids == toset(["subnet-0qa", "subnet-0qb"]) &&
      endpoint.security_group_ids == toset(["sg-0endpoints"]) &&
      endpoint.service_name == data.aws_vpc_endpoint_service.interface[service].service_name &&
      data.aws_vpc_endpoint_service.interface[service].service == service &&
      data.aws_vpc_endpoint_service.interface[service].service_type == "Interface"
    )])
    error_message = "an interface endpoint is not in every private subnet with private DNS and its security group"
  }
  assert {
    condition = (
      aws_vpc_security_group_ingress_rule.endpoints_from_instances[0].security_group_id == "sg-0endpoints" &&
      aws_vpc_security_group_ingress_rule.endpoints_from_instances[0].referenced_security_group_id == "sg-0instances" &&
      aws_vpc_security_group_ingress_rule.endpoints_from_instances[0].from_port == 443 &&
      aws_vpc_security_group_ingress_rule.endpoints_from_vpc[0].cidr_ipv4 == "10.0.0.0/16" &&
      aws_vpc_security_group_ingress_rule.endpoints_from_vpc[0].to_port == 443
    )
    error_message = "the endpoints do not admit HTTPS from the pool instances and the VPC"
  }

  # The S3 gateway endpoint, on the private route table.
  assert {
    condition = (
      length(aws_vpc_endpoint.s3) == 1 && aws_vpc_endpoint.s3[0].vpc_endpoint_type == "Gateway" &&
      aws_vpc_endpoint.s3[0].route_table_ids == toset(["rtb-0private"]) &&
      aws_vpc_endpoint.s3[0].service_name == data.aws_vpc_endpoint_service.s3[0].service_name &&
      data.aws_vpc_endpoint_service.s3[0].service == "s3" && data.aws_vpc_endpoint_service.s3[0].service_type == "Gateway"
    )
    error_message = "no S3 gateway endpoint on the private route table"
  }

  # The fixed cost: 6 interface endpoints x 2 zones x $0.01.
  assert {
    condition     = output.vpc_endpoint_hourly_cost_usd == 0.12 && local.daemon_env["SPOTPOOL_NETWORK_FIXED_DOLLARS_PER_HOUR"] == "0.12"
    error_message = "endpoint cost: ${output.vpc_endpoint_hourly_cost_usd} (daemon_env ${local.daemon_env["SPOTPOOL_NETWORK_FIXED_DOLLARS_PER_HOUR"]}), not 0.12"
  }
  assert {
    condition     = length(output.vpc_endpoints) == 7 && output.vpc_endpoints["s3"].type == "Gateway" && alltrue([for service in keys(aws_vpc_endpoint.interface) : output.vpc_endpoints[service].type == "Interface" && output.vpc_endpoints[service].zones == 2])
    error_message = "vpc_endpoints: ${jsonencode(output.vpc_endpoints)}"
  }
}

run "the_cost_follows_the_zones_the_services_and_the_price" {
  command = plan

  variables {
    network_mode                    = "private"
    public_subnet_count             = 3
    availability_zones              = ["us-east-1a", "us-east-1b", "us-east-1c"]
    interface_endpoint_services     = ["ec2messages", "ecr.api", "ecr.dkr", "secretsmanager", "ssm", "ssmmessages", "bedrock-runtime"]
    interface_endpoint_hourly_price = 0.011
  }

  # 7 x 3 x 0.011 = 0.231, exactly, though 0.011 is no binary fraction.
  assert {
    condition     = output.vpc_endpoint_hourly_cost_usd == 0.231 && local.daemon_env["SPOTPOOL_NETWORK_FIXED_DOLLARS_PER_HOUR"] == "0.231"
    error_message = "endpoint cost: ${local.daemon_env["SPOTPOOL_NETWORK_FIXED_DOLLARS_PER_HOUR"]}, not 0.231"
  }
  assert {
    condition     = length(aws_vpc_endpoint.interface) == 7 && aws_vpc_endpoint.interface["bedrock-runtime"].subnet_ids == toset(["subnet-0qa", "subnet-0qb", "subnet-0qc"])
    error_message = "the added endpoint is not in the three zones"
  }
}

run "the_created_private_network_refuses_an_image_it_cannot_pull" {
  command = plan

  variables {
    network_mode    = "private"
    container_image = "ghcr.io/openclaw/openclaw:2026.9.6"
  }

  expect_failures = [aws_launch_template.pool]
}

run "the_created_private_network_refuses_an_image_of_another_region" {
  command = plan

  variables {
    network_mode    = "private"
    container_image = "123456789012.dkr.ecr.eu-west-1.amazonaws.com/openclaw:2026.9.6"
  }

  expect_failures = [aws_launch_template.pool]
}

run "the_created_private_network_needs_every_endpoint_the_instances_call" {
  command = plan

  variables {
    network_mode                = "private"
    interface_endpoint_services = ["ecr.api", "ecr.dkr", "secretsmanager", "ssm", "ssmmessages"]
  }

  expect_failures = [aws_launch_template.pool]
}

run "an_unknown_network_mode_is_refused" {
  command = plan

  variables {
    network_mode = "nat"
  }

  expect_failures = [var.network_mode]
}

# Your own network: private subnets (two in one zone), public ones for the ALBs.
run "your_private_subnets_get_the_endpoints_one_subnet_per_zone" {
  command = plan

  variables {
    create_network          = false
    network_mode            = "private"
    vpc_id                  = "vpc-0123456789abcdef0"
    subnet_ids              = ["subnet-0a1", "subnet-0a2", "subnet-0b1"]
    alb_subnet_ids          = ["subnet-0fa", "subnet-0fb"]
    private_route_table_ids = ["rtb-0a", "rtb-0b"]
  }

  override_data {
    target = data.aws_vpc.pool[0]
    values = { id = "vpc-0123456789abcdef0", cidr_block = "172.31.0.0/16", enable_dns_support = true, enable_dns_hostnames = true }
  }
  override_data {
    target = data.aws_subnet.pool[0]
    values = { id = "subnet-0a1", availability_zone = "us-east-1a", map_public_ip_on_launch = false }
  }
  override_data {
    target = data.aws_subnet.pool[1]
    values = { id = "subnet-0a2", availability_zone = "us-east-1a", map_public_ip_on_launch = false }
  }
  override_data {
    target = data.aws_subnet.pool[2]
    values = { id = "subnet-0b1", availability_zone = "us-east-1b", map_public_ip_on_launch = false }
  }
  override_data {
    target = data.aws_subnet.alb[0]
    values = { id = "subnet-0fa", availability_zone = "us-east-1a", map_public_ip_on_launch = true }
  }
  override_data {
    target = data.aws_subnet.alb[1]
    values = { id = "subnet-0fb", availability_zone = "us-east-1b", map_public_ip_on_launch = true }
  }

  assert {
    condition     = aws_lb.this[0].subnets == toset(["subnet-0fa", "subnet-0fb"]) && local.subnet_ids == tolist(["subnet-0a1", "subnet-0a2", "subnet-0b1"])
    error_message = "the ALB must be in alb_subnet_ids and the pool in subnet_ids"
  }
  assert {
    condition     = alltrue([for endpoint in aws_vpc_endpoint.interface : endpoint.subnet_ids == toset(["subnet-0a1", "subnet-0b1"]) && endpoint.private_dns_enabled && endpoint.vpc_id == "vpc-0123456789abcdef0"])
    error_message = "an interface endpoint is not in one subnet per zone: ${jsonencode(aws_vpc_endpoint.interface["ssm"].subnet_ids)}"
  }
  assert {
    condition     = aws_vpc_endpoint.s3[0].route_table_ids == toset(["rtb-0a", "rtb-0b"])
    error_message = "the S3 gateway endpoint is not on the given route tables"
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.endpoints_from_vpc[0].cidr_ipv4 == "172.31.0.0/16"
    error_message = "the endpoints do not admit the VPC's CIDR"
  }
  assert {
    condition     = output.vpc_endpoint_hourly_cost_usd == 0.12 && local.daemon_env["SPOTPOOL_PUBLIC_IPV4"] == "false"
    error_message = "6 endpoints in 2 zones: ${output.vpc_endpoint_hourly_cost_usd}"
  }
}

run "your_private_mode_refuses_a_subnet_that_maps_public_addresses" {
  command = plan

  variables {
    create_network = false
    network_mode   = "private"
    vpc_id         = "vpc-0123456789abcdef0"
    subnet_ids     = ["subnet-0a1", "subnet-0b1"]
    alb_subnet_ids = ["subnet-0fa", "subnet-0fb"]
  }

  override_data {
    target = data.aws_vpc.pool[0]
    values = { cidr_block = "172.31.0.0/16", enable_dns_support = true, enable_dns_hostnames = true }
  }
  override_data {
    target = data.aws_subnet.pool[0]
    values = { availability_zone = "us-east-1a", map_public_ip_on_launch = false }
  }
  override_data {
    target = data.aws_subnet.pool[1]
    values = { availability_zone = "us-east-1b", map_public_ip_on_launch = true }
  }
  override_data {
    target = data.aws_subnet.alb[0]
    values = { availability_zone = "us-east-1a" }
  }
  override_data {
    target = data.aws_subnet.alb[1]
    values = { availability_zone = "us-east-1b" }
  }

  expect_failures = [data.aws_subnet.pool]
}

run "your_private_mode_needs_public_subnets_for_the_albs" {
  command = plan

  variables {
    create_network = false
    network_mode   = "private"
    vpc_id         = "vpc-0123456789abcdef0"
    subnet_ids     = ["subnet-0a1", "subnet-0b1"]
  }

  override_data {
    target = data.aws_vpc.pool[0]
    values = { cidr_block = "172.31.0.0/16", enable_dns_support = true, enable_dns_hostnames = true }
  }
  override_data {
    target = data.aws_subnet.pool
    values = { availability_zone = "us-east-1a", map_public_ip_on_launch = false }
  }

  expect_failures = [aws_lb.this]
}

run "your_private_mode_warns_of_an_image_the_endpoints_do_not_reach" {
  command = plan

  variables {
    create_network  = false
    network_mode    = "private"
    vpc_id          = "vpc-0123456789abcdef0"
    subnet_ids      = ["subnet-0a1", "subnet-0b1"]
    alb_subnet_ids  = ["subnet-0fa", "subnet-0fb"]
    container_image = "ghcr.io/openclaw/openclaw:2026.9.6"
  }

  override_data {
    target = data.aws_vpc.pool[0]
    values = { cidr_block = "172.31.0.0/16", enable_dns_support = true, enable_dns_hostnames = true }
  }
  override_data {
    target = data.aws_subnet.pool
    values = { availability_zone = "us-east-1a", map_public_ip_on_launch = false }
  }
  override_data {
    target = data.aws_subnet.alb
    values = { availability_zone = "us-east-1a" }
  }

  expect_failures = [check.private_network]
}

# The ALBs' subnets must be in every zone of the pool's: an ALB routes only to
# targets in its own zones. More zones than the pool's are fine.
run "your_alb_subnets_in_every_zone_of_the_pool_pass" {
  command = plan

  variables {
    create_network = false
    network_mode   = "private"
    vpc_id         = "vpc-0123456789abcdef0"
    subnet_ids     = ["subnet-0a1", "subnet-0a2", "subnet-0b1"]
    alb_subnet_ids = ["subnet-0fa", "subnet-0fb", "subnet-0fc"]
  }

  override_data {
    target = data.aws_vpc.pool[0]
    values = { cidr_block = "172.31.0.0/16", enable_dns_support = true, enable_dns_hostnames = true }
  }
  override_data {
    target = data.aws_subnet.pool[0]
    values = { availability_zone = "us-east-1a", map_public_ip_on_launch = false }
  }
  override_data {
    target = data.aws_subnet.pool[1]
    values = { availability_zone = "us-east-1a", map_public_ip_on_launch = false }
  }
  override_data {
    target = data.aws_subnet.pool[2]
    values = { availability_zone = "us-east-1b", map_public_ip_on_launch = false }
  }
  override_data {
    target = data.aws_subnet.alb[0]
    values = { availability_zone = "us-east-1b" }
  }
  override_data {
    target = data.aws_subnet.alb[1]
    values = { availability_zone = "us-east-1a" }
  }
  override_data {
    target = data.aws_subnet.alb[2]
    values = { availability_zone = "us-east-1c" }
  }

  assert {
    condition     = length(data.aws_subnet.alb) == 3 && length(local.alb_missing_zones) == 0
    error_message = "zones of subnet_ids without an ALB subnet: ${jsonencode(local.alb_missing_zones)}"
  }
  assert {
    condition     = aws_lb.this[0].subnets == toset(["subnet-0fa", "subnet-0fb", "subnet-0fc"])
    error_message = "the ALB is not in alb_subnet_ids: ${jsonencode(aws_lb.this[0].subnets)}"
  }
}

run "your_alb_subnets_missing_a_zone_of_the_pool_are_refused" {
  command = plan

  variables {
    create_network = false
    network_mode   = "private"
    vpc_id         = "vpc-0123456789abcdef0"
    subnet_ids     = ["subnet-0a1", "subnet-0b1", "subnet-0c1"]
    alb_subnet_ids = ["subnet-0fa", "subnet-0fb"]
  }

  override_data {
    target = data.aws_vpc.pool[0]
    values = { cidr_block = "172.31.0.0/16", enable_dns_support = true, enable_dns_hostnames = true }
  }
  override_data {
    target = data.aws_subnet.pool[0]
    values = { availability_zone = "us-east-1a", map_public_ip_on_launch = false }
  }
  override_data {
    target = data.aws_subnet.pool[1]
    values = { availability_zone = "us-east-1b", map_public_ip_on_launch = false }
  }
  override_data {
    target = data.aws_subnet.pool[2]
    values = { availability_zone = "us-east-1c", map_public_ip_on_launch = false }
  }
  override_data {
    target = data.aws_subnet.alb[0]
    values = { availability_zone = "us-east-1a" }
  }
  override_data {
    target = data.aws_subnet.alb[1]
    values = { availability_zone = "us-east-1b" }
  }

  # The ALB's precondition on the zones (us-east-1c has no ALB subnet); every
  # other one of aws_lb.this holds here.
  expect_failures = [aws_lb.this]
}

# Your own subnets in public mode: the daemon counts a public address only when
# they map one.
run "your_own_subnets_without_public_addresses_cost_none" {
  command = plan

  variables {
    create_network = false
    vpc_id         = "vpc-0123456789abcdef0"
    subnet_ids     = ["subnet-0a1", "subnet-0b1"]
  }

  override_data {
    target = data.aws_subnet.pool
    values = { map_public_ip_on_launch = false }
  }

  assert {
    condition     = local.daemon_env["SPOTPOOL_PUBLIC_IPV4"] == "false" && local.daemon_env["SPOTPOOL_NETWORK_FIXED_DOLLARS_PER_HOUR"] == "0" && length(aws_vpc_endpoint.interface) == 0 && length(data.aws_vpc.pool) == 0
    error_message = "daemon_env: ${local.daemon_env["SPOTPOOL_PUBLIC_IPV4"]}, ${local.daemon_env["SPOTPOOL_NETWORK_FIXED_DOLLARS_PER_HOUR"]}"
  }
}
