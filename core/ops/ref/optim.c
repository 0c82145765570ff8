/*
 * core/ops/ref/optim.c: the reference kernels of the optimizer steps, AdamW and SGD (and with the bf16 working copy):
 * lunar_ref_<op>_f64 and lunar_ref_<op>_f32 of lunar/kernels.h (the contract).
 * Written once against `real` and NAME(op), compiled for double and float by
 * generic.h (ref.h: how the reference kernels are written). Tested by
 * tests/c/test_optim.c.
 */
#ifndef LUNAR_REF_GENERIC  /* compiled as a source file: instantiate the code below twice */
#include "ref.h"

#define LUNAR_REF_GENERIC "optim.c"
#include "generic.h"
#else  /* included by generic.h with real and NAME(op) defined */

/* ------------------------------------------------------------------------------------
 * Optimizers */

/* One AdamW step t >= 1 (Loshchilov & Hutter 2019; torch.optim.AdamW, the
 * single-tensor path): decoupled weight decay p *= 1 - lr*wd first, then
 * m, v moving averages and the bias-corrected update
 * p -= lr * (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps). */
void NAME(adamw_step)(real *param, real *m, real *v, const real *grad, size_t n, double lr,
                      double beta1, double beta2, double eps, double weight_decay, int t) {
    double b1 = beta1, b2 = beta2;
    double bc1 = 1.0 - pow(b1, t), bc2 = 1.0 - pow(b2, t);
    for (size_t i = 0; i < n; i++) {
        double g = (double)grad[i];
        double p = (double)param[i] * (1.0 - (double)lr * (double)weight_decay);
        double mi = b1 * (double)m[i] + (1.0 - b1) * g;
        double vi = b2 * (double)v[i] + (1.0 - b2) * g * g;
        p -= (double)lr * (mi / bc1) / (sqrt(vi / bc2) + (double)eps);
        m[i] = (real)mi;
        v[i] = (real)vi;
        param[i] = (real)p;
    }
}

/* One SGD step (torch.optim.SGD with dampening 0): g' = g + wd p;
 * buf = first ? g' : momentum buf + g'; d = nesterov ? g' + momentum buf : buf;
 * p -= lr d. With momentum == 0, d = g' and buf is not touched. */
void NAME(sgd_step)(real *param, real *buf, const real *grad, size_t n, real lr,
                    real momentum, real weight_decay, int nesterov, int first) {
    double mu = (double)momentum;
    for (size_t i = 0; i < n; i++) {
        double g = (double)grad[i] + (double)weight_decay * (double)param[i];
        double d = g;
        if (mu != 0.0) {
            double bi = first ? g : mu * (double)buf[i] + g;
            buf[i] = (real)bi;
            d = nesterov ? g + mu * bi : bi;
        }
        param[i] = (real)((double)param[i] - (double)lr * d);
    }
}

/* adamw_step, then the bf16 working copy of the updated parameter. */
void NAME(adamw_step_bf16)(real *param, uint16_t *param_bf16, real *m, real *v, const real *grad,
                           size_t n, double lr, double beta1, double beta2, double eps,
                           double weight_decay, int t) {
    NAME(adamw_step)(param, m, v, grad, n, lr, beta1, beta2, eps, weight_decay, t);
    NAME(cast_bf16)(param_bf16, param, n);
}

/* sgd_step, then the bf16 working copy of the updated parameter. */
void NAME(sgd_step_bf16)(real *param, uint16_t *param_bf16, real *buf, const real *grad, size_t n,
                         real lr, real momentum, real weight_decay, int nesterov, int first) {
    NAME(sgd_step)(param, buf, grad, n, lr, momentum, weight_decay, nesterov, first);
    NAME(cast_bf16)(param_bf16, param, n);
}

#endif /* LUNAR_REF_GENERIC */
