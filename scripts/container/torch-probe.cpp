// torch-probe: a few-line libtorch program used by scripts/container-test to prove that the image's
// pruned library folder is enough for the dynamic loader and for a real tensor computation, independent
// of how far txcat itself has got. It prints which torch/CUDA libraries the process mapped, so the test
// can tell a CPU-only closure from a CUDA one, then does a matmul and checks the result.
#include <ATen/ATen.h>
#include <ATen/Context.h>

#include <cstdio>
#include <fstream>
#include <set>
#include <string>

int main() {
  // 2x3 of ones times its transpose: every entry is 3, so the sum is 12.
  at::Tensor a = at::ones({2, 3});
  double sum = at::matmul(a, a.t()).sum().item<double>();

  std::set<std::string> mapped;
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    auto slash = line.rfind('/');
    if (slash == std::string::npos) continue;
    std::string name = line.substr(slash + 1);
    if (name.find("torch") != std::string::npos || name.find("libc10") != std::string::npos ||
        name.find("libcu") != std::string::npos || name.find("libnv") != std::string::npos)
      mapped.insert(name);
  }
  for (const auto& name : mapped) std::printf("mapped %s\n", name.c_str());
  std::printf("cuda_built %d\n", at::hasCUDA() ? 1 : 0);
  std::printf("matmul_sum %.1f\n", sum);
  return sum == 12.0 ? 0 : 1;
}
