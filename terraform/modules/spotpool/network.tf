# The optional network: a VPC, one public subnet per availability zone, an
# internet gateway and a default route. Created only when create_network is
# true; otherwise the module uses vpc_id and subnet_ids (and alb_subnet_ids) as
# given.
#
# network_mode = "public" (the default): the ALBs and the pool instances share
# the public subnets, which map a public IP on launch, so the instances reach
# SSM, ECR, Secrets Manager and the image registry without a NAT gateway. They
# still accept nothing but the container port from the ALB (security.tf).
#
# network_mode = "private": the ALBs stay in the public subnets, and the pool
# instances go into as many private subnets (one per zone, in the upper half of
# vpc_cidr), which map no public IP and whose route table has no route out of
# the VPC: they reach AWS through the VPC endpoints of endpoints.tf only. The
# launch template cannot turn a public IP off itself: a network interface in it
# and the subnet the daemon names at RunInstances exclude each other
# (InvalidParameterCombination), so the subnet decides.

data "aws_availability_zones" "available" {
  count = var.create_network && length(var.availability_zones) == 0 ? 1 : 0
  state = "available"
}

locals {
  subnet_zones = var.create_network ? slice(
    length(var.availability_zones) > 0 ? var.availability_zones : data.aws_availability_zones.available[0].names,
    0,
    var.public_subnet_count,
  ) : []

  # network_mode = "private": no public IPv4 on any pool instance, AWS through
  # the VPC endpoints (endpoints.tf).
  private_network = var.network_mode == "private"
}

resource "aws_vpc" "this" {
  count = var.create_network ? 1 : 0

  cidr_block           = var.vpc_cidr
  enable_dns_support   = true
  enable_dns_hostnames = true

  tags = merge(var.tags, { Name = var.name })
}

resource "aws_internet_gateway" "this" {
  count = var.create_network ? 1 : 0

  vpc_id = aws_vpc.this[0].id

  tags = merge(var.tags, { Name = var.name })
}

resource "aws_subnet" "public" {
  count = length(local.subnet_zones)

  vpc_id                  = aws_vpc.this[0].id
  availability_zone       = local.subnet_zones[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 4, count.index)
  map_public_ip_on_launch = true

  tags = merge(var.tags, { Name = "${var.name}-public-${local.subnet_zones[count.index]}" })
}

resource "aws_route_table" "public" {
  count = var.create_network ? 1 : 0

  vpc_id = aws_vpc.this[0].id

  tags = merge(var.tags, { Name = "${var.name}-public" })
}

resource "aws_route" "internet" {
  count = var.create_network ? 1 : 0

  route_table_id         = aws_route_table.public[0].id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this[0].id
}

resource "aws_route_table_association" "public" {
  count = length(local.subnet_zones)

  subnet_id      = aws_subnet.public[count.index].id
  route_table_id = aws_route_table.public[0].id
}

# --- Private subnets (network_mode = "private") ------------------------------

resource "aws_subnet" "private" {
  count = local.private_network ? length(local.subnet_zones) : 0

  vpc_id                  = aws_vpc.this[0].id
  availability_zone       = local.subnet_zones[count.index]
  cidr_block              = cidrsubnet(var.vpc_cidr, 4, 8 + count.index)
  map_public_ip_on_launch = false

  tags = merge(var.tags, { Name = "${var.name}-private-${local.subnet_zones[count.index]}" })
}

# No route but the VPC's own (local) one, and the S3 gateway endpoint's
# (endpoints.tf): nothing leaves the VPC.
resource "aws_route_table" "private" {
  count = var.create_network && local.private_network ? 1 : 0

  vpc_id = aws_vpc.this[0].id

  tags = merge(var.tags, { Name = "${var.name}-private" })
}

resource "aws_route_table_association" "private" {
  count = length(aws_subnet.private)

  subnet_id      = aws_subnet.private[count.index].id
  route_table_id = aws_route_table.private[0].id
}
