# Two security groups. The ALB accepts 80 and 443 from alb_ingress_cidrs and
# may only talk to the instances' container port. The instances accept the
# container port from the ALB's group and nothing else (no SSH: the daemon
# reaches them over SSM), and may call out (SSM, ECR, Secrets Manager, the image
# registry). The rules are separate resources because the two groups refer to
# each other. (The VPC endpoints' group, network_mode = "private", is in
# endpoints.tf.)

resource "aws_security_group" "alb" {
  name        = "${var.name}-alb"
  description = "spotpool ALB: HTTP/HTTPS in, container port out to the pool instances"
  vpc_id      = local.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-alb" })
}

resource "aws_security_group" "instances" {
  name        = "${var.name}-instances"
  description = "spotpool pool instances: the container port from the ALB only"
  vpc_id      = local.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-instances" })
}

resource "aws_vpc_security_group_ingress_rule" "alb_public" {
  for_each = {
    for pair in setproduct([80, 443], var.alb_ingress_cidrs) : "${pair[0]}-${pair[1]}" => pair
  }

  security_group_id = aws_security_group.alb.id
  description       = "Users to the ALB"
  ip_protocol       = "tcp"
  from_port         = each.value[0]
  to_port           = each.value[0]
  cidr_ipv4         = each.value[1]

  tags = var.tags
}

# The ALB to the user containers: one port per slot of a shared instance
# (container_port + slot; a dedicated one has slot 0 only). (No description on the two rules between the
# groups: moto does not return it, and the local mode's plan would never settle.)
resource "aws_vpc_security_group_egress_rule" "alb_to_instances" {
  security_group_id            = aws_security_group.alb.id
  ip_protocol                  = "tcp"
  from_port                    = var.container_port
  to_port                      = var.container_port + var.max_slots_per_instance - 1
  referenced_security_group_id = aws_security_group.instances.id

  tags = var.tags
}

# The user containers, from the ALB only.
resource "aws_vpc_security_group_ingress_rule" "instances_from_alb" {
  security_group_id            = aws_security_group.instances.id
  ip_protocol                  = "tcp"
  from_port                    = var.container_port
  to_port                      = var.container_port + var.max_slots_per_instance - 1
  referenced_security_group_id = aws_security_group.alb.id

  tags = var.tags
}

resource "aws_vpc_security_group_egress_rule" "instances_out" {
  security_group_id = aws_security_group.instances.id
  description       = "AWS APIs (SSM, ECR, Secrets Manager) and the image registry"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"

  tags = var.tags
}
